//! Ready-made queries written with the DataFrame API.

pub mod q80;

/// TPC-DS q80 as SQL, for engines that take SQL (`shovel q80 --engine
/// datafusion`): `shared/golden/q80.sql`, the text DuckDB's golden answers
/// come from, without its `LIMIT` (the canonical answer has every row).
/// Its window is the default `--date`; `cli::df::q80_sql` moves it.
pub const Q80_SQL: &str = include_str!("q80.sql");
