"""ManiSkill3 trajectories (npz files of the generator) -> action-only RLDS sets the reader loads."""

import numpy as np

from openvla_vq.data.tf_env import tfds
from openvla_vq.sim.maniskill_rlds import convert
from test_train_tokenizer import smooth_actions


def write_episode(root, task: str, seed: int) -> np.ndarray:
    folder = root / "episodes" / task
    folder.mkdir(parents=True, exist_ok=True)
    actions = smooth_actions(seed, 12 + seed)
    np.savez_compressed(folder / f"{seed:06d}.npz", actions=actions, task=task, seed=seed)
    return actions


def episodes(folder) -> list[np.ndarray]:
    ds = tfds.builder_from_directory(str(folder)).as_dataset(split="train")
    return [np.stack([step["action"].numpy() for step in ep["steps"]]) for ep in ds]


def test_held_out_family_split_failed_seeds_ignored_and_a_larger_set_rebuilds(tmp_path):
    src = tmp_path / "maniskill"
    first = [write_episode(src, "PickCube-v1", s) for s in (0, 6)] + [write_episode(src, "PlugCharger-v1", 5)]
    first.append(write_episode(src, "PushCube-v1", 1))
    (src / "episodes" / "PlugCharger-v1" / "000011.failed").touch()
    out = convert(src, tmp_path / "rlds", heldout="PlugCharger-v1")
    synth, heldout = episodes(out["maniskill_synth"]), episodes(out["maniskill_heldout"])
    assert len(synth) == 3 and len(heldout) == 1
    # seed order interleaves the families, so the reader's last-5% `val` split holds all of them
    for got, want in zip(synth, [first[0], first[3], first[1]]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(heldout[0], first[2])
    # `make synth-maniskill N=<larger>` adds trajectories: the dataset is rebuilt, not kept stale
    write_episode(src, "PickCube-v1", 12)
    out = convert(src, tmp_path / "rlds", heldout="PlugCharger-v1")
    assert len(episodes(out["maniskill_synth"])) == 4 and len(episodes(out["maniskill_heldout"])) == 1
