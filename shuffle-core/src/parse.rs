//! The one place where sizes, durations and booleans are parsed.
//!
//! Every crate (shuffle-core's keys, the S3 backend's `s3.*` keys, the
//! engine's keys and the `shovel` command line) calls these three functions,
//! so a value means the same thing wherever it is written. Errors are
//! [`Error::Config`] naming the key (or flag) passed in, the value, and an
//! example of a valid one.
//!
//! | kind | accepted | refused |
//! | --- | --- | --- |
//! | size | `1048576` (bytes), `64k`, `512MiB`, `2GiB`, `1.5g`, `8 MB` | `-1` (cannot be negative), `1.5x`, `` (empty), overflow |
//! | duration | `250ms`, `90s`, `30m`, `12h`, `7d`, `1.5h`, `0` | `90` (no unit), `-1h`, `soon`, `` |
//! | boolean | `true/false`, `1/0`, `yes/no`, `on/off` | `` (empty), `maybe` |
//!
//! Choices, and why:
//! - **Sizes** are binary whatever the spelling: `k`, `kb` and `KiB` are all
//!   1024 (Spark's rule, and what every Shovel size meant before). Units are
//!   case-insensitive, blanks between number and unit are allowed. A
//!   fraction is allowed (`1.5GiB`) and rounded down to whole bytes; a bare
//!   number is bytes.
//! - **Durations** need a unit (`ms`, `s`, `m`, `h`, `d`; also `sec`, `min`),
//!   except `0`. A bare `90` is refused because its unit is a guess: AWS
//!   tooling reads timeouts in milliseconds, `gc --older-than` users think in
//!   hours. Fractions are allowed and rounded down to the millisecond.
//! - **Booleans**: an empty value is an error naming the key, never a silent
//!   `true` (a `--conf s3.path_style=` with a forgotten value must not flip a
//!   setting). Flags that may stand alone (`--write-shuffle-files-to-s3`)
//!   handle the missing value themselves before they get here.

use std::time::Duration;

use crate::{Error, Result};

const SIZE_EXAMPLE: &str =
    "use a byte count or a number with a unit, e.g. 512MiB, 2GiB, 1.5GiB or 64k";
const DURATION_EXAMPLE: &str = "use a number with a unit, e.g. 250ms, 90s, 30m, 12h or 7d";
const BOOL_EXAMPLE: &str = "use true or false (also 1/0, yes/no, on/off)";

/// Parses a size in bytes: `1048576`, `64k`, `512MiB`, `2GiB`, `1.5GiB`
/// (see the module doc for the rules).
pub fn parse_size(key: &str, value: &str) -> Result<u64> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::config(key, format!("empty; {SIZE_EXAMPLE}")));
    }
    if v.starts_with('-') {
        return Err(Error::config(
            key,
            format!("`{value}`: a size cannot be negative; {SIZE_EXAMPLE}"),
        ));
    }
    let bad = || Error::config(key, format!("`{value}` is not a size; {SIZE_EXAMPLE}"));
    let (num, unit) = split_number(v);
    let mult: u128 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = scale_decimal(num, mult).ok_or_else(bad)?;
    u64::try_from(bytes).map_err(|_| {
        Error::config(
            key,
            format!("`{value}` is too large; sizes go up to 16EiB, e.g. 1TiB"),
        )
    })
}

/// Parses a duration: `250ms`, `90s`, `30m`, `12h`, `7d`, `1.5h` or `0`
/// (a bare number other than `0` is refused; see the module doc).
pub fn parse_duration(key: &str, value: &str) -> Result<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::config(key, format!("empty; {DURATION_EXAMPLE}")));
    }
    if v.starts_with('-') {
        return Err(Error::config(
            key,
            format!("`{value}`: a duration cannot be negative; {DURATION_EXAMPLE}"),
        ));
    }
    let bad = || {
        Error::config(
            key,
            format!("`{value}` is not a duration; {DURATION_EXAMPLE}"),
        )
    };
    let (num, unit) = split_number(v);
    let unit = unit.trim().to_ascii_lowercase();
    let ms_per_unit: u128 = match unit.as_str() {
        "" => {
            if scale_decimal(num, 1) == Some(0) {
                return Ok(Duration::ZERO);
            }
            if scale_decimal(num, 1).is_none() {
                return Err(bad());
            }
            return Err(Error::config(
                key,
                format!(
                    "`{value}` has no unit; write e.g. {num}s (or {num}ms, {num}m, {num}h, {num}d)"
                ),
            ));
        }
        "ms" => 1,
        "s" | "sec" | "secs" => 1_000,
        "m" | "min" | "mins" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = scale_decimal(num, ms_per_unit).ok_or_else(bad)?;
    u64::try_from(ms)
        .map(Duration::from_millis)
        .map_err(|_| Error::config(key, format!("`{value}` is too long; e.g. 7d")))
}

/// Parses a boolean: `true/false`, `1/0`, `yes/no`, `on/off` (any case).
/// An empty value is an error naming the key.
pub fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        "" => Err(Error::config(key, format!("empty; {BOOL_EXAMPLE}"))),
        _ => Err(Error::config(
            key,
            format!("`{value}` is not a boolean; {BOOL_EXAMPLE}"),
        )),
    }
}

/// Splits `"1.5GiB"` into `("1.5", "GiB")`.
fn split_number(v: &str) -> (&str, &str) {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    v.split_at(split)
}

/// `num` (digits with at most one `.`) times `mult`, rounded down, or `None`
/// if `num` is malformed or the result overflows. Exact: no floating point.
fn scale_decimal(num: &str, mult: u128) -> Option<u128> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    // Digits past the 18th cannot change a result in bytes or milliseconds
    // for any unit here (the largest multiplier is below 10^14).
    let frac = &frac[..frac.len().min(18)];
    let frac_part = if frac.is_empty() {
        0
    } else {
        let digits: u128 = frac.parse().ok()?;
        digits.checked_mul(mult)? / 10u128.pow(frac.len() as u32)
    };
    int.checked_mul(mult)?.checked_add(frac_part)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    #[test]
    fn sizes() {
        for (v, want) in [
            ("0", Some(0)),
            ("1048576", Some(MIB)),
            ("64k", Some(64 << 10)),
            ("64K", Some(64 << 10)),
            ("64KB", Some(64 << 10)),
            ("512MiB", Some(512 * MIB)),
            ("512mib", Some(512 * MIB)),
            ("512 MiB", Some(512 * MIB)),
            (" 2GiB ", Some(2 * GIB)),
            ("2g", Some(2 * GIB)),
            ("1t", Some(1 << 40)),
            // Once refused by shuffle-core and shuffle-s3, accepted by the engine:
            ("1.5g", Some(GIB + GIB / 2)),
            ("1.5GiB", Some(GIB + GIB / 2)),
            ("0.5k", Some(512)),
            (".5k", Some(512)),
            ("1.0001k", Some(1024)), // 1024.1024 rounded down
            ("1.5", Some(1)),
            ("10b", Some(10)),
            ("16EiB", None),
            ("99999999999t", None),
            ("1.5x", None),
            ("5 parsecs", None),
            ("lots", None),
            ("1.2.3k", None),
            (".", None),
            ("", None),
            ("-1", None),
        ] {
            assert_eq!(parse_size("k", v).ok(), want, "{v:?}");
        }
    }

    #[test]
    fn size_errors_name_key_and_example() {
        let e = parse_size("memory.limit", "-5").unwrap_err().to_string();
        assert!(
            e.contains("memory.limit") && e.contains("cannot be negative"),
            "{e}"
        );
        let e = parse_size("--memory", "lots").unwrap_err().to_string();
        assert!(e.contains("--memory") && e.contains("512MiB"), "{e}");
        let e = parse_size("s3.part_size", "").unwrap_err().to_string();
        assert!(e.contains("s3.part_size") && e.contains("empty"), "{e}");
    }

    #[test]
    fn durations() {
        let s = Duration::from_secs;
        for (v, want) in [
            ("0", Some(Duration::ZERO)),
            ("0.0", Some(Duration::ZERO)),
            ("250ms", Some(Duration::from_millis(250))),
            ("90s", Some(s(90))),
            ("90 sec", Some(s(90))),
            ("30m", Some(s(1800))),
            ("30min", Some(s(1800))),
            ("12h", Some(s(43_200))),
            ("12H", Some(s(43_200))),
            ("7d", Some(s(604_800))),
            ("1.5h", Some(s(5400))),
            ("0.0015s", Some(Duration::from_millis(1))),
            // A bare number once meant seconds to `gc` and was refused by shuffle-s3:
            ("90", None),
            ("-1h", None),
            ("soon", None),
            ("5w", None),
            ("", None),
        ] {
            assert_eq!(parse_duration("k", v).ok(), want, "{v:?}");
        }
        let e = parse_duration("--older-than", "90")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--older-than") && e.contains("90s"), "{e}");
        let e = parse_duration("k", "-1h").unwrap_err().to_string();
        assert!(e.contains("negative"), "{e}");
        let e = parse_duration("k", "soon").unwrap_err().to_string();
        assert!(e.contains("not a duration") && e.contains("12h"), "{e}");
    }

    #[test]
    fn booleans() {
        for (v, want) in [
            ("true", Some(true)),
            ("TRUE", Some(true)),
            ("1", Some(true)),
            ("yes", Some(true)),
            ("on", Some(true)),
            (" false ", Some(false)),
            ("0", Some(false)),
            ("No", Some(false)),
            ("off", Some(false)),
            // Once `true` in shuffle-core and shuffle-s3, an error in the engine:
            ("", None),
            ("maybe", None),
        ] {
            assert_eq!(parse_bool("k", v).ok(), want, "{v:?}");
        }
        let e = parse_bool("s3.path_style", "").unwrap_err().to_string();
        assert!(
            e.contains("s3.path_style") && e.contains("true or false"),
            "{e}"
        );
    }
}
