//! TPC-DS query 80 with the DataFrame API.
//!
//! Per channel: the fact table is first joined with the three filtered
//! dimensions (dates in the 30-day window, items priced over 50, promotions
//! not on TV) and its site dimension — all small, so broadcast under the
//! default threshold — and only then left-joined with its returns table
//! (both sides shuffled on `(item_sk, ticket/order number)` unless returns
//! is small enough to broadcast). Inner joins on fact columns commute with
//! that left join, so the result is q80's. Each channel is aggregated by
//! site id (two-phase), the three are unioned, rolled up by
//! `(channel, id)`, sorted (nulls last) and limited.
//!
//! ```text
//!  store_sales ⋈b date_dim ⋈b store ⋈b item ⋈b promotion ⟕ store_returns ─▶ agg by s_store_id ─┐
//!  catalog_sales ...                                                              ─▶ ...       ├▶ ∪ ─▶ rollup ─▶ sort ─▶ limit
//!  web_sales ...                                                                  ─▶ ...       ┘
//! ```

use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::expr::{coalesce, col, concat, lit, lit_decimal, sum, Expr, ScalarValue};
use crate::logical::DataFrame;
use crate::physical::join::JoinType;
use crate::physical::scan::list_parquet_files;
use crate::session::Session;

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

/// `<dir>/<table>.parquet` or `<dir>/<table>/` (a directory of parts).
pub fn table_path(data_dir: &Path, table: &str) -> PathBuf {
    let file = data_dir.join(format!("{table}.parquet"));
    if file.is_file() {
        file
    } else {
        data_dir.join(table)
    }
}

/// Reads `cols` of `table` and checks their types against the TPC-DS schema
/// the generator writes, so a column of the wrong type is reported naming
/// the table, file and column, not deep in the plan.
fn read_table(session: &Session, data_dir: &Path, table: &str, cols: &[&str]) -> Result<DataFrame> {
    let path = table_path(data_dir, table);
    let df = session.read_parquet(&path, Some(cols))?;
    let expected = crate::tpcds::table_schema(table)
        .map_err(|e| EngineError::plan(format!("schema of table `{table}`: {e}")))?;
    for field in df.schema().fields() {
        let Ok(want) = expected.field_with_name(field.name()) else {
            continue;
        };
        if want.data_type() != field.data_type() {
            let file = list_parquet_files(&path)
                .ok()
                .and_then(|f| f.into_iter().next())
                .unwrap_or(path.clone());
            return Err(EngineError::Schema {
                table: table.to_string(),
                column: field.name().clone(),
                file: file.display().to_string(),
                expected: want.data_type().to_string(),
                found: field.data_type().to_string(),
            });
        }
    }
    Ok(df)
}

/// Options of [`q80`].
#[derive(Debug, Clone)]
pub struct Q80Options {
    /// Window start, days since the epoch (`2000-08-23` in the spec).
    pub date: i32,
    /// Row limit (`LIMIT 100` in the spec; `None` for the whole answer).
    pub limit: Option<usize>,
}

impl Default for Q80Options {
    fn default() -> Self {
        let date = match ScalarValue::date("2000-08-23") {
            Ok(ScalarValue::Date32(d)) => d,
            _ => 11192,
        };
        Self {
            date,
            limit: Some(100),
        }
    }
}

/// Builds q80 over the Parquet tables in `data_dir`.
/// Output columns: `channel`, `id`, `sales`, `returns`, `profit`.
pub fn q80(session: &Session, data_dir: &Path, opts: &Q80Options) -> Result<DataFrame> {
    let start = Expr::Literal(ScalarValue::Date32(opts.date));
    let end = Expr::Literal(ScalarValue::Date32(opts.date + 30));
    let mut union: Option<DataFrame> = None;
    let read = |table: &str, cols: &[&str]| read_table(session, data_dir, table, cols);
    // Shared dimensions: one DataFrame each, so the planner broadcasts each once.
    let dates = read("date_dim", &["d_date_sk", "d_date"])?
        .filter(col("d_date").between(start, end))?
        .select_columns(&["d_date_sk"])?;
    let items = read("item", &["i_item_sk", "i_current_price"])?
        .filter(col("i_current_price").gt(lit(50i32)))?
        .select_columns(&["i_item_sk"])?;
    let promos = read("promotion", &["p_promo_sk", "p_channel_tv"])?
        .filter(col("p_channel_tv").eq(lit("N")))?
        .select_columns(&["p_promo_sk"])?;
    for ch in &CHANNELS {
        let site = read(ch.site, &[ch.site_key, ch.site_id])?;
        let sales = read(
            ch.sales,
            &[
                ch.sold_date_sk,
                ch.item_sk,
                ch.site_sk,
                ch.promo_sk,
                ch.number,
                ch.ext_sales_price,
                ch.net_profit,
            ],
        )?;
        let returns = read(
            ch.returns,
            &[ch.r_item_sk, ch.r_number, ch.return_amt, ch.net_loss],
        )?;
        let joined = sales
            .join(&dates, JoinType::Inner, &[ch.sold_date_sk], &["d_date_sk"])?
            .join(&items, JoinType::Inner, &[ch.item_sk], &["i_item_sk"])?
            .join(&promos, JoinType::Inner, &[ch.promo_sk], &["p_promo_sk"])?
            .join(&site, JoinType::Inner, &[ch.site_sk], &[ch.site_key])?
            .select_columns(&[
                ch.item_sk,
                ch.number,
                ch.ext_sales_price,
                ch.net_profit,
                ch.site_id,
            ])?
            .join(
                &returns,
                JoinType::Left,
                &[ch.item_sk, ch.number],
                &[ch.r_item_sk, ch.r_number],
            )?;
        let zero = lit_decimal(0, 7, 2);
        let per_site = joined
            .aggregate(
                vec![col(ch.site_id)],
                vec![
                    sum(col(ch.ext_sales_price)).alias("sales"),
                    sum(coalesce(vec![col(ch.return_amt), zero.clone()])).alias("returns"),
                    sum(col(ch.net_profit).sub(coalesce(vec![col(ch.net_loss), zero])))
                        .alias("profit"),
                ],
            )?
            .select(vec![
                lit(ch.channel).alias("channel"),
                concat(vec![lit(ch.id_prefix), col(ch.site_id)]).alias("id"),
                col("sales"),
                col("returns"),
                col("profit"),
            ])?;
        union = Some(match union {
            None => per_site,
            Some(u) => u.union_all(&per_site)?,
        });
    }
    let union = union.ok_or_else(|| crate::error::EngineError::internal("no channels"))?;
    let rolled = union.rollup(
        vec![col("channel"), col("id")],
        vec![
            sum(col("sales")).alias("sales"),
            sum(col("returns")).alias("returns"),
            sum(col("profit")).alias("profit"),
        ],
    )?;
    let nulls_last = |e: Expr| crate::expr::SortExpr {
        expr: e,
        ascending: true,
        nulls_first: false,
    };
    let sorted = rolled.sort(vec![nulls_last(col("channel")), nulls_last(col("id"))])?;
    match opts.limit {
        Some(n) => sorted.limit(n),
        None => Ok(sorted),
    }
}
