//! A q80 input whose column has the wrong type fails before any task runs,
//! with an error that names the table, the column, the file, and the
//! expected and found types (not "union inputs must have the same column
//! types").

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchReader};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use engine::queries::q80::{q80, Q80Options};
use engine::tpcds::{ensure_data, Q80_TABLES};
use engine::{EngineConfig, EngineError, Session};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use shuffle_core::{ShuffleConfig, ShuffleManager};

/// Rewrites `src` into `dst` with `column` cast to `to`.
fn rewrite_with_column_as(src: &Path, dst: &Path, column: &str, to: &DataType) {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(src).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let schema = reader.schema();
    let idx = schema.index_of(column).unwrap();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = f.as_ref().clone();
            if i == idx {
                f.with_data_type(to.clone())
            } else {
                f
            }
        })
        .collect();
    let out_schema = Arc::new(Schema::new(fields));
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(dst).unwrap(),
        Arc::clone(&out_schema),
        None,
    )
    .unwrap();
    for b in reader {
        let b = b.unwrap();
        let cols: Vec<ArrayRef> = b
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == idx {
                    cast(c, to).unwrap()
                } else {
                    Arc::clone(c)
                }
            })
            .collect();
        assert_eq!(cols[idx].data_type(), to);
        w.write(&RecordBatch::try_new(Arc::clone(&out_schema), cols).unwrap())
            .unwrap();
    }
    w.close().unwrap();
}

#[test]
fn a_column_of_the_wrong_type_is_named_with_its_table_and_file() {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tpcds-cache");
    let data = ensure_data(0.01, &cache).expect("generate SF 0.01");
    let dir = tempfile::tempdir().unwrap();
    for t in Q80_TABLES {
        let name = format!("{t}.parquet");
        if t == "store_sales" {
            rewrite_with_column_as(
                &data.join(&name),
                &dir.path().join(&name),
                "ss_ext_sales_price",
                &DataType::Float64,
            );
        } else {
            std::fs::copy(data.join(&name), dir.path().join(&name)).unwrap();
        }
    }
    let shuffle_dir = tempfile::tempdir().unwrap();
    let shuffle =
        ShuffleConfig::from_pairs([("local.dirs", shuffle_dir.path().display().to_string())])
            .unwrap();
    let manager = shuffle_local::local_manager(shuffle).unwrap();
    let session = Session::new(
        EngineConfig::default(),
        Arc::new(manager) as Arc<dyn ShuffleManager>,
    );
    let err = q80(&session, dir.path(), &Q80Options::default())
        .expect_err("q80 over a float64 price column must fail at planning");
    assert!(matches!(err, EngineError::Schema { .. }), "{err:?}");
    let msg = err.to_string();
    let file = dir.path().join("store_sales.parquet");
    for needle in [
        "store_sales",
        "ss_ext_sales_price",
        "Float64",
        "Decimal128(7, 2)",
        &file.display().to_string(),
        "shovel gen",
    ] {
        assert!(msg.contains(needle), "`{needle}` missing from: {msg}");
    }
}
