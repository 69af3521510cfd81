"""make demo's stage records: reused on a rerun, redone (with what depends on them) when their inputs changed."""

import json

from openvla_vq.demo import Stages


def test_stages_are_reused_and_a_changed_tokenizer_redoes_its_downstream(tmp_path):
    calls = []
    stages = Stages(tmp_path)
    run_dir, other_dir = tmp_path / "runs" / "vq_m", tmp_path / "runs" / "binning"
    for folder in (run_dir, other_dir):
        folder.mkdir(parents=True)

    def build(name):
        calls.append(name)
        return {"made": name}

    stages.run("3_finetune_vq_m", lambda: build("ft"), key="weights-1")
    stages.run("4_eval_vq_m", lambda: build("eval"))
    stages.run("4_eval_binning", lambda: build("eval-binning"))
    assert stages.run("3_finetune_vq_m", lambda: build("ft"), key="weights-1")["made"] == "ft"
    assert calls == ["ft", "eval", "eval-binning"]  # the second run of the stage was reused

    stages.drop_if_changed("3_finetune_vq_m", "weights-1", ["4_eval_vq_m"], [run_dir])
    assert (tmp_path / "stages" / "4_eval_vq_m.json").is_file() and run_dir.is_dir()  # same weights: kept

    stages.drop_if_changed("3_finetune_vq_m", "weights-2", ["4_eval_vq_m"], [run_dir])
    assert not (tmp_path / "stages" / "3_finetune_vq_m.json").exists()
    assert not (tmp_path / "stages" / "4_eval_vq_m.json").exists() and not run_dir.exists()
    assert (tmp_path / "stages" / "4_eval_binning.json").is_file() and other_dir.is_dir()  # other tokenizer untouched
    stages.run("3_finetune_vq_m", lambda: build("ft"), key="weights-2")
    assert calls[-1] == "ft"
    assert json.loads((tmp_path / "stages" / "3_finetune_vq_m.json").read_text())["key"] == "weights-2"
