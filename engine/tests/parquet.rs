//! Parquet scans: column projection in any order, a directory of files,
//! and row groups split across partitions.

use std::sync::Arc;

use arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use engine::{col, lit, sum, EngineConfig, Session};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use shuffle_core::{ShuffleConfig, ShuffleManager};

fn write(path: &std::path::Path, start: i32, n: i32) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int32, false),
        Field::new("b", DataType::Utf8, true),
        Field::new("c", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int32Array::from_iter_values(start..start + n)),
            Arc::new(StringArray::from_iter_values(
                (start..start + n).map(|i| format!("s{i}")),
            )),
            Arc::new(Int64Array::from_iter_values(
                (start..start + n).map(|i| i as i64 * 10),
            )),
        ],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(100))
        .build();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn projection_order_and_directories() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let data = tempfile::tempdir().unwrap();
        let table = data.path().join("t");
        std::fs::create_dir(&table).unwrap();
        write(&table.join("part-0.parquet"), 0, 250);
        write(&table.join("part-1.parquet"), 250, 250);
        let dir = tempfile::tempdir().unwrap();
        let shuffle =
            ShuffleConfig::from_pairs([("local.dirs", dir.path().display().to_string())]).unwrap();
        let m = shuffle_local::local_manager(shuffle).unwrap();
        let config = EngineConfig {
            scan_partitions: Some(3),
            ..Default::default()
        };
        let s = Session::new(config, Arc::new(m) as Arc<dyn ShuffleManager>);
        let df = s.read_parquet(&table, Some(&["c", "a"])).unwrap();
        assert_eq!(df.schema().field(0).name(), "c");
        let got = df
            .filter(col("a").lt(lit(3i32)))
            .unwrap()
            .collect()
            .await
            .unwrap();
        let b = &got[0];
        assert_eq!(
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values(),
            &[0, 10, 20]
        );
        assert_eq!(
            b.column(1)
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap()
                .values(),
            &[0, 1, 2]
        );
        let total = df
            .aggregate(vec![], vec![sum(col("c")).alias("s")])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let v = total[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(v, (0..500i64).map(|i| i * 10).sum::<i64>());
        assert_eq!(df.count().await.unwrap(), 500);
    });
}
