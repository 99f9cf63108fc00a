//! The canonical CSV of q80 answers, as in `shared/golden/q80_sf*.csv`.
//!
//! * header `channel,id,sales,returns,profit`, then one line per row, each
//!   ended by `\n` (the last one too), no `\r`;
//! * NULL is an empty field (the grand total reads `,,1386774.14,...`);
//! * decimals have exactly two fraction digits, a leading `-` when negative
//!   and at least one integer digit: `0.00`, `-0.50`, `-147.11`;
//! * strings are written bare unless they contain `,`, `"`, `\r` or `\n`,
//!   or are empty (to tell them from NULL): then they are double-quoted
//!   with `"` doubled, as DuckDB's CSV writer does.
//!
//! Rows are written in the order given; [`q80_reference`](super::q80_reference)
//! already sorts them canonically.

use std::fmt::Write as _;

use super::reference::{Q80Row, Q80_SCALE};

/// The header line of the canonical CSV, without its `\n`.
pub const Q80_CSV_HEADER: &str = "channel,id,sales,returns,profit";

/// Render `rows` as the canonical CSV.
pub fn q80_csv(rows: &[Q80Row]) -> String {
    let mut out = String::with_capacity(64 * (rows.len() + 1));
    out.push_str(Q80_CSV_HEADER);
    out.push('\n');
    for r in rows {
        push_str_field(&mut out, r.channel.as_deref());
        out.push(',');
        push_str_field(&mut out, r.id.as_deref());
        for v in [r.sales, r.returns, r.profit] {
            out.push(',');
            if let Some(v) = v {
                push_decimal(&mut out, v, Q80_SCALE);
            }
        }
        out.push('\n');
    }
    out
}

fn push_str_field(out: &mut String, s: Option<&str>) {
    let Some(s) = s else { return };
    if s.is_empty() || s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// Write the unscaled `value` at `scale` with exactly `scale` fraction digits.
pub fn push_decimal(out: &mut String, value: i128, scale: u32) {
    let unit = 10u128.pow(scale);
    let abs = value.unsigned_abs();
    let sign = if value < 0 { "-" } else { "" };
    let (int, frac) = (abs / unit, abs % unit);
    if scale == 0 {
        let _ = write!(out, "{sign}{int}");
    } else {
        let _ = write!(out, "{sign}{int}.{frac:0width$}", width = scale as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(v: i128) -> String {
        let mut s = String::new();
        push_decimal(&mut s, v, 2);
        s
    }

    #[test]
    fn decimals() {
        assert_eq!(dec(0), "0.00");
        assert_eq!(dec(5), "0.05");
        assert_eq!(dec(-50), "-0.50");
        assert_eq!(dec(-14711), "-147.11");
        assert_eq!(dec(138677414), "1386774.14");
        assert_eq!(dec(i128::MIN), "-1701411834604692317316873037158841057.28");
    }

    #[test]
    fn rows_and_nulls() {
        let rows = vec![
            Q80Row {
                channel: Some("web channel".into()),
                id: Some("web_siteAAAAAAAABAAAAAAA".into()),
                sales: Some(1085987),
                returns: Some(0),
                profit: Some(-71972),
            },
            Q80Row {
                channel: Some("a,\"b\"".into()),
                id: Some(String::new()),
                sales: None,
                returns: Some(1),
                profit: None,
            },
            Q80Row {
                channel: None,
                id: None,
                sales: Some(-1),
                returns: None,
                profit: Some(100),
            },
        ];
        assert_eq!(
            q80_csv(&rows),
            "channel,id,sales,returns,profit\n\
             web channel,web_siteAAAAAAAABAAAAAAA,10859.87,0.00,-719.72\n\
             \"a,\"\"b\"\"\",\"\",,0.01,\n\
             ,,-0.01,,1.00\n"
        );
    }
}
