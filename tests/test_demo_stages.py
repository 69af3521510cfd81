"""Pipeline stage records (make demo, make learn-libero): reused on a rerun, redone from scratch when built from
other inputs (their output folders removed first, since runs and evaluations would otherwise resume), resumed
after an interruption."""

import json

import pytest

from openvla_vq.learn_libero import Stages


def test_stages_are_reused_and_a_changed_key_redoes_the_stage_from_scratch(tmp_path):
    calls = []
    stages = Stages(tmp_path)
    run_dir = tmp_path / "runs" / "vq_m"

    def build(name):
        calls.append(name)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("x")
        return {"made": name}

    stages.run("4_finetune_vq_m", lambda: build("first"), key="weights-1", folders=(run_dir,))
    assert stages.run("4_finetune_vq_m", lambda: build("again"), key="weights-1", folders=(run_dir,))["made"] == "first"
    assert calls == ["first"], "the second run of the stage was reused"

    assert stages.run("4_finetune_vq_m", lambda: build("second"), key="weights-2", folders=(run_dir,))["made"] == "second"
    assert calls == ["first", "second"]
    assert not (run_dir / "first").exists() and (run_dir / "second").exists(), "the old output was removed first"
    record = json.loads((tmp_path / "stages" / "4_finetune_vq_m.json").read_text())
    assert record["key"] == "weights-2" and record["wall_s"] >= 0
    assert list(stages.times()) == ["4_finetune_vq_m"]


def test_an_interrupted_stage_keeps_its_partial_output_for_the_same_inputs_and_drops_it_for_others(tmp_path):
    """A killed fine-tune resumes from its checkpoints when rerun with the same key; with another key it starts clean."""
    stages = Stages(tmp_path)

    def interrupt(name: str, key: str, folder) -> None:
        def killed():
            folder.mkdir(parents=True)
            (folder / "step_1000").write_text("partial")
            raise KeyboardInterrupt

        try:
            stages.run(name, killed, key=key, folders=(folder,))
        except KeyboardInterrupt:
            pass

    def rerun(name: str, key: str, folder) -> bool:
        """Whether the rerun's work found the partial output."""
        return stages.run(name, lambda: {"found": (folder / "step_1000").exists()}, key=key, folders=(folder,))["found"]

    binning, vq_m = tmp_path / "runs" / "binning", tmp_path / "runs" / "vq_m"
    interrupt("4_finetune_binning", "8000-steps", binning)
    assert rerun("4_finetune_binning", "8000-steps", binning), "the same inputs resume from what was left"
    assert json.loads((tmp_path / "stages" / "4_finetune_binning.json").read_text())["resumed"] is True
    interrupt("4_finetune_vq_m", "5000-steps", vq_m)
    assert not rerun("4_finetune_vq_m", "8000-steps", vq_m), "other inputs start clean"
    assert list(stages.times()) == ["4_finetune_binning", "4_finetune_vq_m"], "no record of the interruptions remains"


def test_a_stage_whose_output_outside_the_run_changed_on_disk_is_redone(tmp_path):
    """A dataset in a shared data root, rewritten by another run after its stage was recorded, is not reused."""
    stages, dataset = Stages(tmp_path), tmp_path / "data" / "episodes.txt"
    dataset.parent.mkdir()

    def generate(content: str) -> dict:
        dataset.write_text(content)
        return {"digest": content}

    def unchanged(record: dict) -> bool:
        return dataset.read_text() == record["digest"]

    stages.run("2_demonstrations", lambda: generate("four tasks"), key="k", still_valid=unchanged)
    assert stages.run("2_demonstrations", lambda: generate("again"), key="k", still_valid=unchanged)["digest"] == "four tasks"
    dataset.write_text("three tasks")  # another run wrote its own episodes into the same root
    redone = stages.run("2_demonstrations", lambda: generate("four tasks, rewritten"), key="k", still_valid=unchanged)
    assert redone["digest"] == "four tasks, rewritten" and dataset.read_text() == "four tasks, rewritten"


def test_a_replay_follows_its_demonstration_until_an_action_first_differs():
    import numpy as np

    from openvla_vq.evaluation.learning_report import followed_steps

    demo = np.zeros((40, 7))
    demo[:, 0] = np.linspace(-1, 1, 40)
    demo[:, 6] = np.where(np.arange(40) < 20, -1.0, 1.0)  # the gripper closes at step 20
    assert followed_steps(demo.copy(), demo) == {"followed": 40, "demo_steps": 40, "demo_gripper_closed_there": True,
                                                 "onto_other_demonstration": False}

    nudged = demo.copy()
    nudged[:, 2] += 0.05  # a constant offset inside the tolerance is still the demonstration
    nudged[12, 4] += 0.3  # one rotation off by 0.3 at step 12
    assert followed_steps(nudged, demo) == {"followed": 12, "demo_steps": 40, "demo_gripper_closed_there": False,
                                            "onto_other_demonstration": False}

    late_grasp = demo.copy()
    late_grasp[20:23, 6] = -1.0  # keeps the fingers open three steps too long
    assert followed_steps(late_grasp, demo)["followed"] == 20

    stalled = demo[:25].copy()  # an episode cut short (the evaluation ended) follows as far as it went
    assert followed_steps(stalled, demo) == {"followed": 25, "demo_steps": 40, "demo_gripper_closed_there": True,
                                             "onto_other_demonstration": False}

    other = demo.copy()
    other[5:, 1] = 0.5  # another demonstration of the task turns away at step 5
    switched = np.concatenate([demo[:5], other[5:]])  # the replay does what the other one did
    assert followed_steps(switched, demo, [other])["followed"] == 5
    assert followed_steps(switched, demo, [other])["onto_other_demonstration"] is True
    assert followed_steps(switched, demo, [demo + 0.3])["onto_other_demonstration"] is False


def test_success_plots_accept_every_count_whose_wilson_bound_rounds_past_the_rate(tmp_path):
    """At 0/n and n/n the Wilson bound equals the rate up to rounding; a negative error bar crashed the plot."""
    from openvla_vq.evaluation.report import plot_success, wilson_interval

    bars = {}
    for n in range(1, 60):
        for k in (0, n):
            bars[f"{k}/{n}"] = {"success_rate": k / n, "wilson95": list(wilson_interval(k, n))}
    plot_success(tmp_path / "success.png", bars, title="all counts")
    assert (tmp_path / "success.png").stat().st_size > 0


def test_token_predictability_counts_bits_and_tokens_kept_between_neighbouring_frames():
    """Position 0 cycles through four codes (2 bits, never kept), position 1 is constant (0 bits, always kept),
    position 2 lies past every sequence's end and is not counted."""
    import torch

    from openvla_vq.learn_libero import token_predictability

    ids = torch.tensor([[i % 4, 9, 0] for i in range(8)])
    inside = torch.tensor([[True, True, False]] * 8)
    got = token_predictability(ids, inside)
    assert got["token_entropy_bits"] == 1.0  # mean of 2 bits and 0 bits
    assert got["same_token_as_next_frame"] == 0.5  # 7 pairs at position 0 all change, 7 at position 1 all stay


def test_gripper_errors_count_frames_whose_predicted_gripper_is_the_other_state_per_instruction():
    """OpenVLA's normalization leaves the gripper in {0, 1} (1 open); near-misses on the right side are not errors."""
    import torch

    from openvla_vq.learn_libero import gripper_errors

    gold = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    predicted = torch.tensor([0.9, 0.2, 0.0, 0.7, 1.0, 0.1])  # wrong: frames 1 (closed for open) and 3 (open for closed)
    texts = ["pick", "pick", "pick", "drawer", "drawer", "drawer"]
    assert gripper_errors(predicted, gold, texts) == {"drawer": round(1 / 3, 3), "pick": round(1 / 3, 3)}
    assert gripper_errors(gold * 2 - 1, gold * 2 - 1, texts) == {"drawer": 0.0, "pick": 0.0}  # [-1, 1] coding too


def test_diagnostics_give_the_model_the_images_the_evaluation_gives_it():
    """The teacher-forced diagnostics read dataset frames (JPEG-decoded, resized); the evaluation renders, JPEG round
    trips, resizes and, for a checkpoint trained with augmentation, centre-crops. For the same render both must reach
    the model as the same pixels, with and without the crop, for each camera."""
    import numpy as np

    from openvla_vq.data.images import resize_uint8
    from openvla_vq.data.tf_env import tf
    from openvla_vq.data.preprocess import preprocess_image
    from openvla_vq.learn_libero import eval_images

    rng = np.random.default_rng(0)
    renders = [np.clip(np.add.outer(np.arange(256), np.arange(256))[..., None] // 2 + rng.integers(0, 40, (256, 256, 3)),
                       0, 255).astype(np.uint8) for _ in range(2)]
    # the dataset stores JPEG; fine-tuning and the diagnostics decode and resize it
    frames = [resize_uint8(tf.io.decode_image(tf.io.encode_jpeg(r), channels=3), 224).numpy() for r in renders]
    sample = {"image": frames[0], "wrist_image": frames[1]}
    for crop in (False, True):
        got = eval_images(crop)(sample)
        assert len(got) == 2
        for image, render in zip(got, renders):
            np.testing.assert_array_equal(image, preprocess_image(render, crop=crop))
    assert not np.array_equal(eval_images(True)(sample)[0], frames[0])  # the crop did something


def test_the_rlds_digest_is_the_same_for_two_writes_of_the_same_episodes_and_changes_with_one_action(tmp_path):
    """tfds serializes feature maps in any order, so the bytes of two writes may differ; the digest must not."""
    from rlds_fixtures import write_libero_like

    from openvla_vq.data.rlds_writer import libero_episode, write_rlds
    from openvla_vq.learn_libero import rlds_digest

    first = write_libero_like(tmp_path / "a", episodes=3, length=6)
    write_libero_like(tmp_path / "b", episodes=3, length=6)
    first[1]["actions"][2, 0] += 0.5
    write_rlds(tmp_path / "c", "libero_90_no_noops", (libero_episode(a["images"], a["wrist"], a["states"], a["joints"],
               a["actions"], a["instruction"], f"episode_{i}") for i, a in enumerate(first)))
    digests = [rlds_digest(tmp_path / r / "libero_90_no_noops" / "1.0.0") for r in "abc"]
    assert digests[0] == digests[1]
    assert digests[2] != digests[0]


def test_trained_state_trials_never_replay_a_demonstration_fine_tuning_held_out():
    """OpenVLA's loader trains on the first 95% of episodes (train[:95%]); with 3 tasks x 1 demonstration the third
    task's only demonstration is held out, so replaying it would count an unseen start as trained."""
    from openvla_vq.demo import DEMO
    from openvla_vq.learn_libero import check_trained_trials, parse_args

    check_trained_trials(parse_args([], DEMO))  # the demo trains on every demonstration
    check_trained_trials(parse_args([]))  # 4 x 10: episodes 39-40 (task 56's 9th and 10th) held out; trials 1-3
    check_trained_trials(parse_args(["--trained_trials", "8"]))
    with pytest.raises(SystemExit, match="--trained_trials 9 .* the last 2 of 40"):
        check_trained_trials(parse_args(["--trained_trials", "9"]))
    with pytest.raises(SystemExit, match="the last 1 of 3"):
        check_trained_trials(parse_args(["--train_split", "train"], DEMO))  # the demo before it trained on all


def test_an_action_noise_outside_the_action_range_is_refused_before_any_stage(tmp_path):
    from openvla_vq.learn_libero import main

    with pytest.raises(SystemExit, match=r"--action_noise 2.0 is outside \[0, 1\]"):
        main(["--action_noise", "2", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
