//! TPC-DS query 80 as plain Rust: the oracle for the engine's q80.
//!
//! No engine, no SQL: Parquet is read with column projection, joins are hash
//! maps, money is exact `i128` at scale 2. This module doc is the semantic
//! spec of q80 (`shared/golden/q80.sql`, without its `LIMIT`).
//!
//! # The query
//!
//! For each channel (store, catalog, web) with sales table `S`, returns table
//! `R`, and "site" dimension `D` (`store`, `catalog_page`, `web_site`):
//!
//! ```text
//! S LEFT JOIN R ON (S.item_sk = R.item_sk AND S.ticket/order_number = R.…)
//!   JOIN date_dim  ON S.sold_date_sk = d_date_sk
//!                 AND d_date BETWEEN date AND date + 30 days   (both ends in)
//!   JOIN D         ON S.site_sk = D.site_sk
//!   JOIN item      ON S.item_sk = i_item_sk  AND i_current_price > 50
//!   JOIN promotion ON S.promo_sk = p_promo_sk AND p_channel_tv = 'N'
//! GROUP BY D.site_id:
//!   sales   = SUM(S.ext_sales_price)
//!   returns = SUM(COALESCE(R.return_amt, 0))
//!   profit  = SUM(S.net_profit - COALESCE(R.net_loss, 0))
//! ```
//!
//! The three results are tagged (`'store channel'`, `concat('store', id)`),
//! (`'catalog channel'`, `concat('catalog_page', id)`), (`'web channel'`,
//! `concat('web_site', id)`), concatenated (`UNION ALL`), and summed again
//! with `GROUP BY ROLLUP (channel, id)`: one row per (channel, id), one
//! subtotal per channel (id NULL), one grand total (channel and id NULL).
//! Rows are ordered by channel, then id, ascending, byte-wise, NULLs last.
//!
//! # NULL semantics, exactly
//!
//! * A join key that is NULL matches nothing (sales rows with a NULL
//!   `sold_date_sk`, `site_sk` or `promo_sk` drop out; returns rows with a
//!   NULL key are never matched). `d_date`, `i_current_price`,
//!   `p_channel_tv` NULL fail their predicates.
//! * The left join keeps a sale without returns once, with `return_amt` and
//!   `net_loss` NULL, which `COALESCE` turns into 0. A sale with k matching
//!   returns contributes k rows (its sales amount counted k times, as SQL
//!   does).
//! * `net_profit - COALESCE(net_loss, 0)` is NULL when `net_profit` is NULL.
//! * `SUM` ignores NULLs and is NULL over no non-NULL input. The ROLLUP sums
//!   the per-id sums the same way.
//! * `concat` treats a NULL argument as the empty string (DuckDB, Postgres),
//!   so a NULL site id would give id `'store'`, not NULL.
//! * Dimension keys are unique in TPC-DS data, but the oracle does not
//!   assume it: a key matching n dimension rows multiplies the fact row by n.
//! * `GROUP BY ROLLUP` over no rows at all still yields the grand-total row
//!   (with NULL sums), as the SQL grouping set `()` does.
//!
//! # Decimals
//!
//! Every money column is `Decimal128(7, 2)` in `tpcdsgen-arrow` output; the
//! SQL result types are `DECIMAL(38, 2)` (sums) of `DECIMAL(8, 2)`
//! (differences). The oracle reads each column's declared scale and
//! rescales to [`Q80_SCALE`] = 2 exactly; a column with more than two
//! fraction digits is rejected rather than rounded, since the canonical CSV
//! has exactly two. The `> 50` predicate compares at scale 2 (`> 5000`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, Decimal128Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::date::SqlDate;
use super::{Result, TpcdsError};

/// The fixed decimal scale of every money value in [`Q80Row`].
pub const Q80_SCALE: u32 = 2;

/// Length of q80's date window in days: `d_date BETWEEN date AND date + 30`.
pub const Q80_WINDOW_DAYS: i32 = 30;

/// The window start the golden answers use (`--date` default).
pub const Q80_DEFAULT_DATE: SqlDate = SqlDate::from_ymd_const(2000, 8, 23);

/// One row of q80's answer. Money is the unscaled value at scale
/// [`Q80_SCALE`] (`12345` is `123.45`); `None` is SQL NULL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Q80Row {
    /// `None` only on the grand-total row.
    pub channel: Option<String>,
    /// `None` on subtotal and grand-total rows.
    pub id: Option<String>,
    pub sales: Option<i128>,
    pub returns: Option<i128>,
    pub profit: Option<i128>,
}

/// Column names of one channel: its sales and returns tables and the
/// "site" dimension that names the group.
struct Channel {
    channel: &'static str,
    id_prefix: &'static str,
    sales: &'static str,
    sold_date_sk: &'static str,
    item_sk: &'static str,
    site_sk: &'static str,
    promo_sk: &'static str,
    number: &'static str,
    ext_sales_price: &'static str,
    net_profit: &'static str,
    returns: &'static str,
    r_item_sk: &'static str,
    r_number: &'static str,
    return_amt: &'static str,
    net_loss: &'static str,
    site: &'static str,
    site_key: &'static str,
    site_id: &'static str,
}

const CHANNELS: [Channel; 3] = [
    Channel {
        channel: "store channel",
        id_prefix: "store",
        sales: "store_sales",
        sold_date_sk: "ss_sold_date_sk",
        item_sk: "ss_item_sk",
        site_sk: "ss_store_sk",
        promo_sk: "ss_promo_sk",
        number: "ss_ticket_number",
        ext_sales_price: "ss_ext_sales_price",
        net_profit: "ss_net_profit",
        returns: "store_returns",
        r_item_sk: "sr_item_sk",
        r_number: "sr_ticket_number",
        return_amt: "sr_return_amt",
        net_loss: "sr_net_loss",
        site: "store",
        site_key: "s_store_sk",
        site_id: "s_store_id",
    },
    Channel {
        channel: "catalog channel",
        id_prefix: "catalog_page",
        sales: "catalog_sales",
        sold_date_sk: "cs_sold_date_sk",
        item_sk: "cs_item_sk",
        site_sk: "cs_catalog_page_sk",
        promo_sk: "cs_promo_sk",
        number: "cs_order_number",
        ext_sales_price: "cs_ext_sales_price",
        net_profit: "cs_net_profit",
        returns: "catalog_returns",
        r_item_sk: "cr_item_sk",
        r_number: "cr_order_number",
        return_amt: "cr_return_amount",
        net_loss: "cr_net_loss",
        site: "catalog_page",
        site_key: "cp_catalog_page_sk",
        site_id: "cp_catalog_page_id",
    },
    Channel {
        channel: "web channel",
        id_prefix: "web_site",
        sales: "web_sales",
        sold_date_sk: "ws_sold_date_sk",
        item_sk: "ws_item_sk",
        site_sk: "ws_web_site_sk",
        promo_sk: "ws_promo_sk",
        number: "ws_order_number",
        ext_sales_price: "ws_ext_sales_price",
        net_profit: "ws_net_profit",
        returns: "web_returns",
        r_item_sk: "wr_item_sk",
        r_number: "wr_order_number",
        return_amt: "wr_return_amt",
        net_loss: "wr_net_loss",
        site: "web_site",
        site_key: "web_site_sk",
        site_id: "web_site_id",
    },
];

/// SQL `SUM` state of the three measures: `None` until a non-NULL value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sums {
    sales: Option<i128>,
    returns: Option<i128>,
    profit: Option<i128>,
}

/// Fold `value` (taken `times` times) into a SQL `SUM`.
fn sum_into(acc: &mut Option<i128>, value: Option<i128>, times: u64) {
    if let Some(v) = value {
        *acc = Some(acc.unwrap_or(0) + v * i128::from(times));
    }
}

impl Sums {
    fn add(&mut self, sales: Option<i128>, returns: Option<i128>, profit: Option<i128>, n: u64) {
        sum_into(&mut self.sales, sales, n);
        sum_into(&mut self.returns, returns, n);
        sum_into(&mut self.profit, profit, n);
    }

    fn merge(&mut self, other: &Sums) {
        self.add(other.sales, other.returns, other.profit, 1);
    }
}

/// Run q80 over the Parquet tables in `data_dir` with the 30-day window
/// starting at `date` (inclusive at both ends). Rows come sorted as in the
/// canonical CSV.
pub fn q80_reference(data_dir: &Path, date: SqlDate) -> Result<Vec<Q80Row>> {
    let window_start = date.to_date32();
    let window_end = date.add_days(Q80_WINDOW_DAYS).to_date32();

    // Shared dimensions: key -> number of qualifying rows with that key.
    let dates = key_counts(data_dir, "date_dim", "d_date_sk", &["d_date"], |c, i| {
        let d = c[0].as_primitive::<Date32Type>();
        d.is_valid(i) && (window_start..=window_end).contains(&d.value(i))
    })?;
    let items = key_counts(
        data_dir,
        "item",
        "i_item_sk",
        &["i_current_price"],
        |c, i| decimal_at(&c[0], i).is_some_and(|price| price > 50 * 100),
    )?;
    let promos = key_counts(
        data_dir,
        "promotion",
        "p_promo_sk",
        &["p_channel_tv"],
        |c, i| {
            let tv = c[0].as_string::<i32>();
            tv.is_valid(i) && tv.value(i) == "N"
        },
    )?;

    // (channel, id) -> sums, after the UNION ALL and the outer GROUP BY.
    let mut groups: BTreeMap<String, BTreeMap<String, Sums>> = BTreeMap::new();
    for ch in &CHANNELS {
        for (site_id, sums) in channel_sums(data_dir, ch, &dates, &items, &promos)? {
            // concat(prefix, NULL) = prefix
            let id = format!("{}{}", ch.id_prefix, site_id.unwrap_or_default());
            groups
                .entry(ch.channel.to_string())
                .or_default()
                .entry(id)
                .or_default()
                .merge(&sums);
        }
    }

    // ROLLUP (channel, id): detail rows, per-channel subtotals, grand total.
    let mut rows = Vec::new();
    let mut total = Sums::default();
    for (channel, ids) in groups {
        let mut subtotal = Sums::default();
        for (id, sums) in ids {
            subtotal.merge(&sums);
            rows.push(row(Some(channel.clone()), Some(id), sums));
        }
        total.merge(&subtotal);
        rows.push(row(Some(channel), None, subtotal));
    }
    rows.push(row(None, None, total));
    rows.sort_by(|a, b| nulls_last(&a.channel, &b.channel).then_with(|| nulls_last(&a.id, &b.id)));
    Ok(rows)
}

fn row(channel: Option<String>, id: Option<String>, s: Sums) -> Q80Row {
    Q80Row {
        channel,
        id,
        sales: s.sales,
        returns: s.returns,
        profit: s.profit,
    }
}

/// Ascending byte-wise order with NULL after every value.
fn nulls_last(a: &Option<String>, b: &Option<String>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

/// One channel's CTE (`ssr`, `csr` or `wsr`): site id -> sums.
fn channel_sums(
    data_dir: &Path,
    ch: &Channel,
    dates: &HashMap<i64, u64>,
    items: &HashMap<i64, u64>,
    promos: &HashMap<i64, u64>,
) -> Result<HashMap<Option<String>, Sums>> {
    // site_sk -> site ids of the matching dimension rows.
    let mut sites: HashMap<i64, Vec<Option<String>>> = HashMap::new();
    scan(data_dir, ch.site, &[ch.site_key, ch.site_id], |c, rows| {
        let keys = int_column(ch.site, ch.site_key, &c[0])?;
        let ids = string_column(ch.site, ch.site_id, &c[1])?;
        let ids = ids.as_string::<i32>();
        for i in 0..rows {
            if keys.is_valid(i) {
                let id = ids.is_valid(i).then(|| ids.value(i).to_string());
                sites.entry(keys.value(i)).or_default().push(id);
            }
        }
        Ok(())
    })?;

    // (item_sk, number) -> (return_amt, net_loss) of each matching return.
    type ReturnVals = (Option<i128>, Option<i128>);
    let mut returns: HashMap<(i64, i64), Vec<ReturnVals>> = HashMap::new();
    let r_cols = [ch.r_item_sk, ch.r_number, ch.return_amt, ch.net_loss];
    scan(data_dir, ch.returns, &r_cols, |c, rows| {
        let item = int_column(ch.returns, ch.r_item_sk, &c[0])?;
        let number = int_column(ch.returns, ch.r_number, &c[1])?;
        let amt = decimal_column(ch.returns, ch.return_amt, &c[2])?;
        let loss = decimal_column(ch.returns, ch.net_loss, &c[3])?;
        for i in 0..rows {
            if item.is_valid(i) && number.is_valid(i) {
                let key = (item.value(i), number.value(i));
                returns.entry(key).or_default().push((amt[i], loss[i]));
            }
        }
        Ok(())
    })?;

    let mut out: HashMap<Option<String>, Sums> = HashMap::new();
    let s_cols = [
        ch.sold_date_sk,
        ch.item_sk,
        ch.site_sk,
        ch.promo_sk,
        ch.number,
        ch.ext_sales_price,
        ch.net_profit,
    ];
    const NO_RETURN: [(Option<i128>, Option<i128>); 1] = [(None, None)];
    scan(data_dir, ch.sales, &s_cols, |c, rows| {
        let date_sk = int_column(ch.sales, ch.sold_date_sk, &c[0])?;
        let item_sk = int_column(ch.sales, ch.item_sk, &c[1])?;
        let site_sk = int_column(ch.sales, ch.site_sk, &c[2])?;
        let promo_sk = int_column(ch.sales, ch.promo_sk, &c[3])?;
        let number = int_column(ch.sales, ch.number, &c[4])?;
        let sales = decimal_column(ch.sales, ch.ext_sales_price, &c[5])?;
        let profit = decimal_column(ch.sales, ch.net_profit, &c[6])?;
        let key = |a: &Int64Array, i: usize| a.is_valid(i).then(|| a.value(i));
        for i in 0..rows {
            // Inner joins: a NULL or unmatched key drops the row.
            let lookup = |keys: &Int64Array, dim: &HashMap<i64, u64>| {
                key(keys, i).and_then(|k| dim.get(&k).copied())
            };
            let (Some(nd), Some(ni), Some(np)) = (
                lookup(&date_sk, dates),
                lookup(&item_sk, items),
                lookup(&promo_sk, promos),
            ) else {
                continue;
            };
            let Some(site_ids) = key(&site_sk, i).and_then(|k| sites.get(&k)) else {
                continue;
            };
            let times = nd * ni * np;
            // Left join: the matching returns, or one all-NULL return.
            let matched = match (key(&item_sk, i), key(&number, i)) {
                (Some(it), Some(n)) => returns.get(&(it, n)).map(Vec::as_slice),
                _ => None,
            };
            for &(return_amt, net_loss) in matched.unwrap_or(&NO_RETURN) {
                let ret = Some(return_amt.unwrap_or(0));
                let prof = profit[i].map(|p| p - net_loss.unwrap_or(0));
                for site_id in site_ids {
                    out.entry(site_id.clone())
                        .or_default()
                        .add(sales[i], ret, prof, times);
                }
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Scan `table` keeping `key` and `extra` columns, and count, per non-NULL
/// key, the rows for which `keep(extra_columns, row)` holds. The predicate
/// sees the extra columns normalised (see [`normalise`]).
fn key_counts(
    data_dir: &Path,
    table: &str,
    key: &str,
    extra: &[&str],
    keep: impl Fn(&[ArrayRef], usize) -> bool,
) -> Result<HashMap<i64, u64>> {
    let mut counts = HashMap::new();
    let mut columns = vec![key];
    columns.extend_from_slice(extra);
    scan(data_dir, table, &columns, |cols, rows| {
        let keys = int_column(table, key, &cols[0])?;
        let extra_cols = extra
            .iter()
            .zip(&cols[1..])
            .map(|(name, c)| normalise(table, name, c))
            .collect::<Result<Vec<_>>>()?;
        for i in 0..rows {
            if keys.is_valid(i) && keep(&extra_cols, i) {
                *counts.entry(keys.value(i)).or_insert(0) += 1;
            }
        }
        Ok(())
    })?;
    Ok(counts)
}

/// Cast a predicate column to the one type the reference reads for its
/// kind: money to `Decimal128(38, 2)`, strings to `Utf8`, dates to `Date32`.
fn normalise(table: &str, column: &str, array: &ArrayRef) -> Result<ArrayRef> {
    match array.data_type() {
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) => {
            let values = decimal_column(table, column, array)?;
            let a = Decimal128Array::from(values)
                .with_precision_and_scale(38, Q80_SCALE as i8)
                .map_err(TpcdsError::arrow(table))?;
            Ok(Arc::new(a))
        }
        DataType::Date32 | DataType::Date64 => {
            cast(array, &DataType::Date32).map_err(TpcdsError::arrow(table))
        }
        _ => string_column(table, column, array),
    }
}

/// The unscaled scale-2 value at `row` of a normalised decimal column.
fn decimal_at(column: &ArrayRef, row: usize) -> Option<i128> {
    let a = column.as_primitive::<Decimal128Type>();
    a.is_valid(row).then(|| a.value(row))
}

fn column_error(table: &str, column: &str, reason: impl Into<String>) -> TpcdsError {
    TpcdsError::Column {
        table: table.to_string(),
        column: column.to_string(),
        reason: reason.into(),
    }
}

/// An integer key column as `Int64`.
fn int_column(table: &str, column: &str, array: &ArrayRef) -> Result<Int64Array> {
    match array.data_type() {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let a = cast(array, &DataType::Int64).map_err(TpcdsError::arrow(table))?;
            Ok(a.as_primitive::<Int64Type>().clone())
        }
        other => Err(column_error(
            table,
            column,
            format!("expected an integer key, found {other}"),
        )),
    }
}

/// A string column as `Utf8` (from `Utf8`, `Utf8View`, `LargeUtf8`, ...).
fn string_column(table: &str, column: &str, array: &ArrayRef) -> Result<ArrayRef> {
    match array.data_type() {
        DataType::Utf8 => Ok(array.clone()),
        DataType::Utf8View | DataType::LargeUtf8 | DataType::Dictionary(..) => {
            cast(array, &DataType::Utf8).map_err(TpcdsError::arrow(table))
        }
        other => Err(column_error(
            table,
            column,
            format!("expected a string, found {other}"),
        )),
    }
}

/// A decimal money column as unscaled values at scale [`Q80_SCALE`].
fn decimal_column(table: &str, column: &str, array: &ArrayRef) -> Result<Vec<Option<i128>>> {
    let scale = match array.data_type() {
        DataType::Decimal32(_, s) | DataType::Decimal64(_, s) | DataType::Decimal128(_, s) => *s,
        other => {
            return Err(column_error(
                table,
                column,
                format!("expected a decimal, found {other}"),
            ))
        }
    };
    if !(0..=Q80_SCALE as i8).contains(&scale) {
        return Err(column_error(
            table,
            column,
            format!("decimal scale {scale} is not in 0..={Q80_SCALE}; refusing to round"),
        ));
    }
    let factor = 10i128.pow(Q80_SCALE - scale as u32);
    // Widening to Decimal128 at the same scale is exact.
    let wide = cast(array, &DataType::Decimal128(38, scale)).map_err(TpcdsError::arrow(table))?;
    let wide = wide.as_primitive::<Decimal128Type>();
    Ok(wide.iter().map(|v| v.map(|v| v * factor)).collect())
}

/// The Parquet files of `table` in `data_dir`: `<table>.parquet`, or the
/// `*.parquet` files of a `<table>/` directory in name order.
pub fn table_files(data_dir: &Path, table: &str) -> Result<Vec<PathBuf>> {
    let file = data_dir.join(format!("{table}.parquet"));
    if file.is_file() {
        return Ok(vec![file]);
    }
    let dir = data_dir.join(table);
    if dir.is_dir() {
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(TpcdsError::io(&dir))? {
            let path = entry.map_err(TpcdsError::io(&dir))?.path();
            if path.extension().is_some_and(|e| e == "parquet") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        if !files.is_empty() {
            return Ok(files);
        }
    }
    Err(TpcdsError::MissingTable {
        table: table.to_string(),
        dir: data_dir.to_path_buf(),
    })
}

/// Read `columns` of `table` batch by batch: `f(columns, rows)` sees the
/// batch's columns in the order of `columns`.
fn scan(
    data_dir: &Path,
    table: &str,
    columns: &[&str],
    mut f: impl FnMut(&[ArrayRef], usize) -> Result<()>,
) -> Result<()> {
    for path in table_files(data_dir, table)? {
        let file = File::open(&path).map_err(TpcdsError::io(&path))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(TpcdsError::parquet(&path))?;
        let mut indices = Vec::with_capacity(columns.len());
        for name in columns {
            let index = builder
                .schema()
                .index_of(name)
                .map_err(|_| column_error(table, name, format!("missing in {}", path.display())))?;
            indices.push(index);
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices.iter().copied());
        let reader = builder
            .with_projection(mask)
            .with_batch_size(8192)
            .build()
            .map_err(TpcdsError::parquet(&path))?;
        for batch in reader {
            let batch = batch.map_err(TpcdsError::arrow(table))?;
            // The projected batch keeps file order; pick columns by name.
            let cols = columns
                .iter()
                .map(|name| {
                    batch
                        .column_by_name(name)
                        .cloned()
                        .ok_or_else(|| column_error(table, name, "missing after projection"))
                })
                .collect::<Result<Vec<_>>>()?;
            f(&cols, batch.num_rows())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpcds::q80_csv;
    use arrow::array::{Date32Array, Int32Array, Int64Array, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;

    fn dec(values: &[Option<i128>]) -> ArrayRef {
        Arc::new(
            Decimal128Array::from(values.to_vec())
                .with_precision_and_scale(7, 2)
                .unwrap(),
        )
    }

    fn int(values: &[Option<i32>]) -> ArrayRef {
        Arc::new(Int32Array::from(values.to_vec()))
    }

    fn long(values: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    fn string(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    fn write(dir: &Path, table: &str, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let file = File::create(dir.join(format!("{table}.parquet"))).unwrap();
        let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    /// Empty sales, returns and site tables of a channel.
    fn write_empty_channel(dir: &Path, ch: &Channel) {
        let e = || int(&[]);
        let sales = [
            ch.sold_date_sk,
            ch.item_sk,
            ch.site_sk,
            ch.promo_sk,
            ch.number,
            ch.ext_sales_price,
            ch.net_profit,
        ];
        let cols = sales.iter().map(|c| (*c, e())).collect::<Vec<_>>();
        let mut cols = cols;
        cols[5].1 = dec(&[]);
        cols[6].1 = dec(&[]);
        write(dir, ch.sales, cols);
        let r = [ch.r_item_sk, ch.r_number];
        let mut cols = r.iter().map(|c| (*c, e())).collect::<Vec<_>>();
        cols.push((ch.return_amt, dec(&[])));
        cols.push((ch.net_loss, dec(&[])));
        write(dir, ch.returns, cols);
        write(
            dir,
            ch.site,
            vec![(ch.site_key, e()), (ch.site_id, string(&[]))],
        );
    }

    /// Hand-made rows exercising each NULL and boundary rule of the spec.
    #[test]
    fn null_and_boundary_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let start = Q80_DEFAULT_DATE.to_date32();
        // sk 1: window start, 2: window end (start + 30), 3: start + 31,
        // 4: NULL d_date.
        write(
            d,
            "date_dim",
            vec![
                ("d_date_sk", int(&[Some(1), Some(2), Some(3), Some(4)])),
                (
                    "d_date",
                    Arc::new(Date32Array::from(vec![
                        Some(start),
                        Some(start + 30),
                        Some(start + 31),
                        None,
                    ])),
                ),
            ],
        );
        // item 10: 50.01 qualifies; 11: exactly 50.00 does not.
        write(
            d,
            "item",
            vec![
                ("i_item_sk", int(&[Some(10), Some(11)])),
                ("i_current_price", dec(&[Some(5001), Some(5000)])),
            ],
        );
        write(
            d,
            "promotion",
            vec![
                ("p_promo_sk", int(&[Some(7), Some(8), Some(9)])),
                ("p_channel_tv", string(&[Some("N"), Some("Y"), None])),
            ],
        );
        write(
            d,
            "store",
            vec![
                ("s_store_sk", int(&[Some(1), Some(2), Some(3)])),
                ("s_store_id", string(&[Some("A"), Some("B"), Some("A")])),
            ],
        );
        // Sales rows (date, item, store, promo, ticket, ext_sales, net_profit):
        type Sale = (
            Option<i32>,
            i32,
            Option<i32>,
            Option<i32>,
            i64,
            Option<i128>,
            Option<i128>,
        );
        let sales: Vec<Sale> = vec![
            (Some(1), 10, Some(1), Some(7), 100, Some(1000), Some(200)), // kept, 2 returns
            (Some(2), 10, Some(3), Some(7), 101, Some(50), None), // kept, NULL profit, store A via sk 3
            (Some(3), 10, Some(1), Some(7), 102, Some(1), Some(1)), // date after window
            (Some(4), 10, Some(1), Some(7), 103, Some(1), Some(1)), // NULL d_date
            (None, 10, Some(1), Some(7), 104, Some(1), Some(1)),  // NULL date key
            (Some(1), 11, Some(1), Some(7), 105, Some(1), Some(1)), // price = 50
            (Some(1), 10, Some(1), Some(8), 106, Some(1), Some(1)), // tv = 'Y'
            (Some(1), 10, Some(1), Some(9), 107, Some(1), Some(1)), // tv NULL
            (Some(1), 10, None, Some(7), 108, Some(1), Some(1)),  // NULL store key
            (Some(1), 10, Some(2), None, 109, Some(1), Some(1)),  // NULL promo key
            (Some(2), 10, Some(2), Some(7), 110, None, Some(-300)), // store B, NULL sales
        ];
        write(
            d,
            "store_sales",
            vec![
                (
                    "ss_sold_date_sk",
                    int(&sales.iter().map(|s| s.0).collect::<Vec<_>>()),
                ),
                (
                    "ss_item_sk",
                    int(&sales.iter().map(|s| Some(s.1)).collect::<Vec<_>>()),
                ),
                (
                    "ss_store_sk",
                    int(&sales.iter().map(|s| s.2).collect::<Vec<_>>()),
                ),
                (
                    "ss_promo_sk",
                    int(&sales.iter().map(|s| s.3).collect::<Vec<_>>()),
                ),
                (
                    "ss_ticket_number",
                    long(&sales.iter().map(|s| Some(s.4)).collect::<Vec<_>>()),
                ),
                (
                    "ss_ext_sales_price",
                    dec(&sales.iter().map(|s| s.5).collect::<Vec<_>>()),
                ),
                (
                    "ss_net_profit",
                    dec(&sales.iter().map(|s| s.6).collect::<Vec<_>>()),
                ),
            ],
        );
        // Two returns of (10, 100), one of (10, 101) with NULL amounts, one
        // of (10, 110) with a NULL net loss.
        write(
            d,
            "store_returns",
            vec![
                ("sr_item_sk", int(&[Some(10), Some(10), Some(10), Some(10)])),
                (
                    "sr_ticket_number",
                    long(&[Some(100), Some(100), Some(101), Some(110)]),
                ),
                ("sr_return_amt", dec(&[Some(30), Some(70), None, Some(5)])),
                ("sr_net_loss", dec(&[Some(10), Some(20), None, None])),
            ],
        );
        write_empty_channel(d, &CHANNELS[1]);
        write_empty_channel(d, &CHANNELS[2]);

        let rows = q80_reference(d, Q80_DEFAULT_DATE).unwrap();
        // storeA: sale 100 twice (two returns): sales 2 * 10.00, returns
        // 0.30 + 0.70, profit (2.00 - 0.10) + (2.00 - 0.20); sale 101:
        // sales 0.50, returns 0, profit NULL. storeB: sales NULL, returns
        // 0.05, profit -3.00.
        assert_eq!(
            q80_csv(&rows),
            "channel,id,sales,returns,profit\n\
             store channel,storeA,20.50,1.00,3.70\n\
             store channel,storeB,,0.05,-3.00\n\
             store channel,,20.50,1.05,0.70\n\
             ,,20.50,1.05,0.70\n"
        );
    }
}
