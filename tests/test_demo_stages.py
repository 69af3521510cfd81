"""Pipeline stage records (make demo, make learn-libero): reused on a rerun, redone from scratch when built from
other inputs (their output folders removed first, since runs and evaluations would otherwise resume)."""

import json

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
