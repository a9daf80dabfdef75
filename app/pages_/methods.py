"""Method views: values some methods keep of their own, shown when a run has them (by their keys, not
the method's name): DFA's search weights, the auxiliary heads of LSSKD, domain adaptation's confidence."""

from __future__ import annotations

import streamlit as st

from app.common import epoch_slider, link, pick_run
from app.common import store as open_store
from kdlib import viz
from kdlib.views import domain_confidence, head_probabilities, method_views, search_weights

store = open_store()
st.title("Method views")
st.caption(
    "Some methods record values no other method has: DFA searches how to mix the teacher's features, LSSKD "
    "trains auxiliary classifiers on the student's inner layers, domain adaptation learns on an unlabelled "
    "target domain. A view appears here when the run has its values. ProKT's moving teacher is drawn on the "
    "Teacher route page."
)
runs = store.runs("student")
if runs.empty:
    st.info("No student runs yet.")
    link("train", "Train a run")
    st.stop()
first = next((i for i in runs.id if method_views(store, i)), None)  # the newest run that has a view
run_id = pick_run(runs, "run", key="methods-run", default=first)
views = method_views(store, run_id)
if not views:
    st.info(
        "This run has none of the values these views read: DFA's search weights (`dfa.alpha.*` scalars), "
        "auxiliary heads (`p_true_head*` per sample) or target-domain values (`target.*` arrays). Train a "
        "`dfa`, `lsskd` or `uda_pkd` run to see them."
    )
    link("route", "Its teacher's route", run=run_id)
    st.stop()

if "dfa_search" in views:
    st.subheader("DFA: aggregation weights during the search")
    st.caption(
        "Before distillation, DFA learns for each student stage how to mix the teacher's candidate features "
        "(softmax of α, candidate 1 the shallowest); the mix at the end of the search is then frozen."
    )
    st.plotly_chart(viz.search_weights_figure(search_weights(store, run_id)), key="methods-dfa")
if "heads" in views:
    st.subheader("LSSKD: the auxiliary heads")
    st.caption("Mean probability of the true class of each auxiliary classifier (shallow to deep) and the final one.")
    st.plotly_chart(viz.head_accuracy_figure(head_probabilities(store, run_id)), key="methods-heads")
if "domain" in views:
    st.subheader("Domain adaptation: source and target confidence")
    st.caption(
        "On the labelled source the student learns the true class; on the unlabelled target only its confidence "
        "can be seen. Adaptation should move the target's histogram toward the source's."
    )
    epochs = store.per_sample_epochs(run_id, split="target")
    epoch = epoch_slider(epochs, key=f"methods-epoch-{run_id}")
    st.plotly_chart(viz.domain_confidence_figure(domain_confidence(store, run_id, epoch)), key="methods-domain")
link("inspect", "Its samples in Inspect", run=run_id)
