"""Method views: DFA's search, LSSKD's heads and domain adaptation's confidence, found by their stored keys."""

from __future__ import annotations

import numpy as np

from kdlib.events import EpochEnded, RunEnded, StepLogged
from kdlib.store import RunStore, StoreSink
from tests.app.conftest import figures, open_page


def fake_run(tiny, per_sample=lambda epoch: {}, search=()) -> str:
    """A run written by hand: search scalars at epoch -1, then two epochs of per-sample arrays."""
    store = RunStore()
    run_id = store.create_run(tiny())
    sink = StoreSink(store, run_id)
    for step, scalars in enumerate(search):
        sink.emit(StepLogged(-1, step * 10, scalars))
    for epoch in range(2):
        sink.emit(EpochEnded(epoch, 10 * (epoch + 1), {"test.acc": 0.5}, per_sample(epoch)))
    sink.emit(RunEnded("done"))
    sink.close()
    return run_id


def test_an_empty_store_and_a_run_without_method_values():
    assert "No student runs" in open_page("methods").info[0].value


def test_a_run_without_method_values_says_which_values_the_views_read(tiny):
    run_id = fake_run(tiny, lambda e: {"train.p_true_student": np.full(4, 0.5)})
    app = open_page("methods", run=run_id)
    assert "dfa.alpha" in app.info[0].value and not figures(app)


def test_dfa_search_weights_per_stage_over_steps(tiny):
    search = [{"dfa.alpha.stage1.1": 0.5 - s / 10, "dfa.alpha.stage1.2": 0.5 + s / 10} for s in range(3)]
    search = [s | {"dfa.alpha.stage2.1": 1.0, "dfa.bridge_loss": 2.0} for s in search]
    app = open_page("methods", run=fake_run(tiny, search=search))
    (weights,) = figures(app)
    assert len(weights["data"]) == 3 and weights["data"][0]["x"] == [0, 10, 20]
    assert np.allclose(weights["data"][1]["y"], [0.5, 0.6, 0.7])


def test_auxiliary_heads_and_domain_confidence(tiny):
    def arrays(epoch):
        return {
            "train.p_true_head1": np.full(4, 0.2 + epoch / 10),
            "train.p_true_head2": np.full(4, 0.4),
            "train.p_true_student": np.full(4, 0.6),
            "train.p_true_teacher": np.full(4, 0.9),
            "target.confidence_student": np.array([0.5, 0.6, 0.7]),
            "target.confidence_teacher": np.array([0.8, 0.9, 0.95]),
            "target.kl": np.zeros(3),
        }

    run_id = fake_run(tiny, arrays)
    app = open_page("methods")  # the newest run with a view is picked
    heads, domain = figures(app)
    assert [t["name"] for t in heads["data"]] == ["head 1", "head 2", "final"]
    assert np.allclose(heads["data"][0]["y"], [0.2, 0.3], atol=1e-3)
    assert [t["name"] for t in domain["data"]] == ["student", "teacher", "student", "teacher"]
    assert np.allclose(domain["data"][2]["x"], [0.5, 0.6, 0.7], atol=1e-3)
    assert app.query_params["run"] in (run_id, [run_id])
