//! Per-operator metrics (issue 14, item 6): q80 at SF 0.01 reports each
//! stage's operators with rows that agree with the stage and the answer,
//! and a run under a tiny memory budget attributes its spill to the
//! operators that spill (sort, aggregate, join).

mod common;

use std::path::Path;

use common::{cache_dir, session, Backend};
use engine::queries::q80::{q80, Q80Options};
use engine::tpcds::ensure_data;
use engine::{EngineConfig, JobSummary};

fn run(config: EngineConfig, data: &Path) -> (u64, JobSummary) {
    common::runtime().block_on(async {
        let t = session(Backend::Local, config).await;
        let opts = Q80Options {
            limit: None,
            ..Default::default()
        };
        let df = q80(&t.session, data, &opts).expect("plan q80");
        let (batches, summary) = df.collect_with_summary().await.expect("run q80");
        (batches.iter().map(|b| b.num_rows() as u64).sum(), summary)
    })
}

fn is_leaf(s: &engine::StageSummary, i: usize) -> bool {
    s.operators[i].children.is_empty()
}

#[test]
fn q80_operator_rows_agree_with_stages_and_answer() {
    let data = ensure_data(0.01, &cache_dir()).expect("generate TPC-DS data");
    let config = EngineConfig {
        shuffle_partitions: 4,
        broadcast_threshold: 0,
        ..Default::default()
    };
    let (answer_rows, s) = run(config, &data);
    assert!(answer_rows > 3);
    let json = s.to_json();
    assert!(json.contains("\"operators\":["), "{json}");
    for st in &s.stages {
        assert!(
            !st.operators.is_empty(),
            "stage {} has operators",
            st.stage_id
        );
        // The root's rows are what the stage produced (shuffled or returned).
        assert_eq!(
            st.operators[0].rows_out, st.rows_out,
            "stage {} root {:?}",
            st.stage_id, st.operators[0]
        );
        // Leaves (scans and shuffle reads) produce what the stage read.
        let leaves: u64 = (0..st.operators.len())
            .filter(|i| is_leaf(st, *i))
            .map(|i| st.operators[i].rows_out)
            .sum();
        assert_eq!(
            leaves, st.rows_in,
            "stage {} leaves {:?}",
            st.stage_id, st.operators
        );
        for o in &st.operators {
            assert!(o.elapsed_ms >= 0.0);
            assert_eq!(o.spill_bytes, 0, "no spill with the default budget: {o:?}");
        }
    }
    let last = s
        .stages
        .iter()
        .find(|st| st.output == "result")
        .expect("result stage");
    assert_eq!(last.operators[0].rows_out, answer_rows);
    assert!(
        s.stages
            .iter()
            .flat_map(|st| &st.operators)
            .any(|o| o.name.contains("Scan") && o.rows_out > 0),
        "a scan read rows"
    );
}

#[test]
fn tight_memory_spill_is_attributed_to_spilling_operators() {
    let data = ensure_data(0.01, &cache_dir()).expect("generate TPC-DS data");
    let config = EngineConfig {
        shuffle_partitions: 4,
        broadcast_threshold: 0,
        memory_budget: 256 << 10,
        ..Default::default()
    };
    let (_, s) = run(config, &data);
    assert!(s.spill_bytes > 0, "operators spilled: {}", s.to_json());
    let mut attributed = 0;
    for o in s.stages.iter().flat_map(|st| &st.operators) {
        if o.spill_bytes > 0 {
            assert!(
                ["Sort", "Aggregate", "Join"]
                    .iter()
                    .any(|n| o.name.contains(n)),
                "spill attributed to {o:?}"
            );
            attributed += o.spill_bytes;
        }
    }
    assert_eq!(
        attributed, s.spill_bytes,
        "every spilled byte has an operator"
    );
}
