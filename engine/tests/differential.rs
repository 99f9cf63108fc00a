//! Differential tests: random tables through the engine's wide transforms,
//! compared with plain-Rust reference computations (as sorted row multisets),
//! on the local backend, on S3 (embedded server), with every join shuffled,
//! and with a memory budget small enough to force spilling.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use engine::{
    avg, col, count, count_star, lit, max, min, sum, EngineConfig, JobSummary, JoinType, Session,
};
use proptest::prelude::*;

fn key() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        3 => Just(Some(0i64)),
        6 => (0i64..12).prop_map(Some),
        1 => Just(None),
    ]
}

fn k2() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        5 => prop::sample::select(vec!["x", "y", "zz"]).prop_map(|s| Some(s.to_string())),
        1 => Just(None),
    ]
}

fn val() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![9 => (-1000i64..1000).prop_map(Some), 1 => Just(None)]
}

fn dec() -> impl Strategy<Value = Option<i128>> {
    prop_oneof![9 => (-99_999i128..99_999).prop_map(Some), 1 => Just(None)]
}

fn table_a(max: usize) -> impl Strategy<Value = Vec<RowA>> {
    prop::collection::vec((key(), k2(), val(), dec()), 0..max)
}

fn table_b(max: usize) -> impl Strategy<Value = Vec<RowB>> {
    prop::collection::vec((key(), k2(), val()), 0..max)
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Defaults (small tables broadcast).
    Default,
    /// Broadcast disabled: every join shuffles.
    Shuffled,
    /// Tiny memory budget: operators must spill.
    Spill,
}

fn config(mode: Mode) -> EngineConfig {
    let mut c = EngineConfig {
        shuffle_partitions: 3,
        parallelism: 2,
        scan_partitions: Some(2),
        ..Default::default()
    };
    match mode {
        Mode::Default => {}
        Mode::Shuffled => c.broadcast_threshold = 0,
        Mode::Spill => {
            c.broadcast_threshold = 0;
            c.memory_budget = 8 << 10;
            c.batch_size = 16;
        }
    }
    c
}

fn v_i(v: Option<i64>) -> V {
    v.map_or(V::Null, V::I)
}

fn ref_join(a: &[RowA], b: &[RowB], left: bool, two_keys: bool) -> Vec<Row> {
    let mut out = Vec::new();
    for ra in a {
        let mut matched = false;
        for rb in b {
            let eq =
                ra.0.is_some() && ra.0 == rb.0 && (!two_keys || (ra.1.is_some() && ra.1 == rb.1));
            if eq {
                matched = true;
                let mut r = va(ra);
                r.extend(vb(rb));
                out.push(r);
            }
        }
        if left && !matched {
            let mut r = va(ra);
            r.extend([V::Null, V::Null, V::Null]);
            out.push(r);
        }
    }
    sorted(out)
}

#[derive(Default, Clone)]
struct Acc {
    sum: Option<i64>,
    cnt: i64,
    star: i64,
    min: Option<i64>,
    max: Option<i64>,
    dsum: Option<i128>,
    dcnt: i64,
}

impl Acc {
    fn add(&mut self, r: &RowA) {
        self.star += 1;
        if let Some(v) = r.2 {
            self.sum = Some(self.sum.unwrap_or(0) + v);
            self.cnt += 1;
            self.min = Some(self.min.map_or(v, |m| m.min(v)));
            self.max = Some(self.max.map_or(v, |m| m.max(v)));
        }
        if let Some(d) = r.3 {
            self.dsum = Some(self.dsum.unwrap_or(0) + d);
            self.dcnt += 1;
        }
    }

    fn avg_dec(&self) -> V {
        // avg of Decimal(7,2) is Decimal(11,6), rounded half away from zero
        match self.dsum {
            Some(s) if self.dcnt > 0 => {
                let num = s * 10_000;
                let c = self.dcnt as i128;
                let (q, r) = (num / c, num % c);
                V::D(
                    if 2 * r.abs() >= c {
                        q + num.signum()
                    } else {
                        q
                    },
                    6,
                )
            }
            _ => V::Null,
        }
    }
}

fn ref_aggregate(a: &[RowA]) -> Vec<Row> {
    let mut g: BTreeMap<(V, V), Acc> = BTreeMap::new();
    for r in a {
        g.entry((v_i(r.0), r.1.clone().map_or(V::Null, V::S)))
            .or_default()
            .add(r);
    }
    sorted(
        g.into_iter()
            .map(|((k, k2), acc)| {
                vec![
                    k,
                    k2,
                    v_i(acc.sum),
                    V::I(acc.cnt),
                    V::I(acc.star),
                    v_i(acc.min),
                    v_i(acc.max),
                    acc.dsum.map_or(V::Null, |d| V::D(d, 2)),
                    acc.avg_dec(),
                ]
            })
            .collect(),
    )
}

fn ref_rollup(a: &[RowA]) -> Vec<Row> {
    let mut out = Vec::new();
    for level in 0..3 {
        let mut g: BTreeMap<(V, V), Acc> = BTreeMap::new();
        for r in a {
            let k2 = if level <= 1 {
                r.1.clone().map_or(V::Null, V::S)
            } else {
                V::Null
            };
            let k = if level == 0 { v_i(r.0) } else { V::Null };
            g.entry((k2, k)).or_default().add(r);
        }
        if level == 2 && a.is_empty() {
            // ROLLUP's grand total exists even over no rows (SQL's empty
            // grouping set): sum NULL, count 0.
            g.insert((V::Null, V::Null), Acc::default());
        }
        for ((k2, k), acc) in g {
            out.push(vec![k2, k, v_i(acc.sum), V::I(acc.star)]);
        }
    }
    sorted(out)
}

async fn run(_session: &Session, df: engine::DataFrame) -> (Vec<Row>, JobSummary) {
    let (b, s) = df.collect_with_summary().await.expect("query runs");
    (rows(&b), s)
}

/// Runs every transform on one session and checks it; returns operator spill bytes.
async fn check_all(session: &Session, a: &[RowA], b: &[RowB]) -> u64 {
    let mut spilled = 0u64;
    let da = session
        .read_batches(schema_a(), batches_a(a, 3))
        .expect("a");
    let db = session
        .read_batches(schema_b(), batches_b(b, 2))
        .expect("b");

    // inner join, one key
    let (got, s) = run(
        session,
        da.join(&db, JoinType::Inner, &["a_key"], &["b_key"])
            .unwrap(),
    )
    .await;
    assert_eq!(sorted(got), ref_join(a, b, false, false), "inner join");
    spilled += s.spill_bytes;

    // inner join, two keys
    let (got, s) = run(
        session,
        da.join(&db, JoinType::Inner, &["a_key", "a_k2"], &["b_key", "b_k2"])
            .unwrap(),
    )
    .await;
    assert_eq!(
        sorted(got),
        ref_join(a, b, false, true),
        "inner join on two keys"
    );
    spilled += s.spill_bytes;

    // left outer join
    let (got, s) = run(
        session,
        da.join(&db, JoinType::Left, &["a_key"], &["b_key"])
            .unwrap(),
    )
    .await;
    assert_eq!(sorted(got), ref_join(a, b, true, false), "left join");
    spilled += s.spill_bytes;

    // aggregate
    let agg = da
        .aggregate(
            vec![col("a_key"), col("a_k2")],
            vec![
                sum(col("a_val")),
                count(col("a_val")),
                count_star(),
                min(col("a_val")),
                max(col("a_val")),
                sum(col("a_dec")).alias("sd"),
                avg(col("a_dec")).alias("ad"),
            ],
        )
        .unwrap();
    let (got, s) = run(session, agg).await;
    assert_eq!(sorted(got), ref_aggregate(a), "aggregate");
    spilled += s.spill_bytes;

    // global aggregate (no keys) over possibly empty input
    let (got, _) = run(
        session,
        da.aggregate(
            vec![],
            vec![count_star().alias("n"), sum(col("a_val")).alias("s")],
        )
        .unwrap(),
    )
    .await;
    let total: Option<i64> = a
        .iter()
        .filter_map(|r| r.2)
        .fold(None, |acc, v| Some(acc.unwrap_or(0) + v));
    assert_eq!(
        got,
        vec![vec![V::I(a.len() as i64), v_i(total)]],
        "global aggregate"
    );

    // rollup
    let (got, s) = run(
        session,
        da.rollup(
            vec![col("a_k2"), col("a_key")],
            vec![sum(col("a_val")), count_star()],
        )
        .unwrap(),
    )
    .await;
    assert_eq!(sorted(got), ref_rollup(a), "rollup");
    spilled += s.spill_bytes;

    // repartition (hash and round robin) keeps the multiset
    let want = sorted(a.iter().map(va).collect());
    let (got, _) = run(session, da.repartition_by(vec![col("a_key")], 4).unwrap()).await;
    assert_eq!(sorted(got), want, "hash repartition");
    let (got, _) = run(session, da.repartition(3).unwrap()).await;
    assert_eq!(sorted(got), want, "round-robin repartition");

    // distinct
    let (got, s) = run(
        session,
        da.select_columns(&["a_key", "a_k2"])
            .unwrap()
            .distinct()
            .unwrap(),
    )
    .await;
    let want: BTreeSet<Row> = a.iter().map(|r| va(r)[..2].to_vec()).collect();
    assert_eq!(
        sorted(got),
        want.into_iter().collect::<Vec<_>>(),
        "distinct"
    );
    spilled += s.spill_bytes;

    // sort: a_key asc nulls first, a_val desc nulls last
    let (got, s) = run(
        session,
        da.sort(vec![col("a_key").sort_asc(), col("a_val").sort_desc()])
            .unwrap(),
    )
    .await;
    let keys = |r: &Row| (r[0].clone(), r[2].clone());
    let mut want: Vec<(V, V)> = a.iter().map(|r| keys(&va(r))).collect();
    want.sort_by(|x, y| {
        let k = x.0.cmp(&y.0); // V::Null sorts first
        let v = match (&x.1, &y.1) {
            (V::Null, V::Null) => std::cmp::Ordering::Equal,
            (V::Null, _) => std::cmp::Ordering::Greater,
            (_, V::Null) => std::cmp::Ordering::Less,
            (p, q) => q.cmp(p),
        };
        k.then(v)
    });
    assert_eq!(got.iter().map(keys).collect::<Vec<_>>(), want, "sort order");
    assert_eq!(sorted(got), sorted(a.iter().map(va).collect()), "sort rows");
    spilled += s.spill_bytes;

    // top-k
    let (got, _) = run(
        session,
        da.sort(vec![col("a_key").sort_asc(), col("a_val").sort_desc()])
            .unwrap()
            .limit(5)
            .unwrap(),
    )
    .await;
    assert_eq!(
        got.iter().map(keys).collect::<Vec<_>>(),
        want.iter().take(5).cloned().collect::<Vec<_>>(),
        "top-k"
    );

    // union all + filter + limit
    let u = da
        .select_columns(&["a_key", "a_k2", "a_val"])
        .unwrap()
        .union_all(&db)
        .unwrap()
        .filter(col("a_val").gt(lit(0i64)))
        .unwrap();
    let (got, _) = run(session, u.clone()).await;
    let mut want: Vec<Row> = a
        .iter()
        .filter(|r| r.2.is_some_and(|v| v > 0))
        .map(|r| va(r)[..3].to_vec())
        .collect();
    want.extend(b.iter().filter(|r| r.2.is_some_and(|v| v > 0)).map(vb));
    assert_eq!(sorted(got), sorted(want.clone()), "union all + filter");
    let (got, _) = run(session, u.limit(3).unwrap()).await;
    assert_eq!(got.len(), want.len().min(3), "limit");
    spilled
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn local_backend_matches_reference(a in table_a(120), b in table_b(60)) {
        runtime().block_on(async {
            let t = session(Backend::Local, config(Mode::Default)).await;
            check_all(&t.session, &a, &b).await;
            let t = session(Backend::Local, config(Mode::Shuffled)).await;
            check_all(&t.session, &a, &b).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn spilling_matches_reference(a in table_a(300), b in table_b(200)) {
        runtime().block_on(async {
            let t = session(Backend::Local, config(Mode::Spill)).await;
            let spilled = check_all(&t.session, &a, &b).await;
            if a.len() > 100 && b.len() > 60 {
                prop_assert!(spilled > 0, "expected operators to spill");
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    #[test]
    fn s3_backend_matches_reference(a in table_a(100), b in table_b(50)) {
        runtime().block_on(async {
            let t = session(Backend::S3, config(Mode::Shuffled)).await;
            check_all(&t.session, &a, &b).await;
            let t = session(Backend::S3, config(Mode::Spill)).await;
            check_all(&t.session, &a, &b).await;
        });
    }
}

/// Spilling is forced and visible in metrics (fixed, large-enough input).
#[test]
fn tiny_budget_spills_in_every_operator() {
    let a: Vec<RowA> = (0..3000)
        .map(|i| {
            (
                Some(i % 97),
                Some(format!("k{}", i % 7)),
                Some(i),
                Some(i as i128 * 3),
            )
        })
        .collect();
    let b: Vec<RowB> = (0..2000)
        .map(|i| (Some(i % 89), Some(format!("k{}", i % 5)), Some(i)))
        .collect();
    runtime().block_on(async {
        let t = session(Backend::Local, config(Mode::Spill)).await;
        let s = &t.session;
        let da = s.read_batches(schema_a(), batches_a(&a, 4)).unwrap();
        let db = s.read_batches(schema_b(), batches_b(&b, 4)).unwrap();
        let (got, sum_join) = run(
            s,
            da.join(&db, JoinType::Inner, &["a_key"], &["b_key"])
                .unwrap(),
        )
        .await;
        assert_eq!(sorted(got), ref_join(&a, &b, false, false));
        assert!(sum_join.spill_bytes > 0, "join spilled: {sum_join:?}");
        let (got, sum_sort) = run(s, da.sort(vec![col("a_val").sort_desc()]).unwrap()).await;
        assert_eq!(got.len(), a.len());
        assert!(sum_sort.spill_bytes > 0, "sort spilled");
        let (got, sum_agg) = run(
            s,
            da.aggregate(
                vec![col("a_key"), col("a_k2")],
                vec![
                    sum(col("a_val")),
                    count(col("a_val")),
                    count_star(),
                    min(col("a_val")),
                    max(col("a_val")),
                    sum(col("a_dec")).alias("sd"),
                    avg(col("a_dec")).alias("ad"),
                ],
            )
            .unwrap(),
        )
        .await;
        assert_eq!(sorted(got), ref_aggregate(&a));
        assert!(sum_agg.spill_bytes > 0, "aggregate spilled");
        let json = sum_agg.to_json();
        assert!(json.contains("\"spill_bytes\""));
    });
}

/// Every transform over empty inputs, in every mode: in particular ROLLUP's
/// grand total row exists (whichever final partition its key hashes to).
#[test]
fn empty_inputs_match_reference() {
    runtime().block_on(async {
        for mode in [Mode::Default, Mode::Shuffled, Mode::Spill] {
            let t = session(Backend::Local, config(mode)).await;
            check_all(&t.session, &[], &[]).await;
        }
        for partitions in [1, 2, 5, 8] {
            let c = EngineConfig {
                shuffle_partitions: partitions,
                ..config(Mode::Shuffled)
            };
            let t = session(Backend::Local, c).await;
            let da = t
                .session
                .read_batches(schema_a(), vec![])
                .expect("empty table");
            let (got, _) = run(
                &t.session,
                da.rollup(vec![col("a_k2"), col("a_key")], vec![count_star()])
                    .unwrap(),
            )
            .await;
            assert_eq!(
                got,
                vec![vec![V::Null, V::Null, V::I(0)]],
                "rollup over no rows, {partitions} partitions"
            );
        }
    });
}
