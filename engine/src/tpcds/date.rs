//! [`SqlDate`]: a proleptic Gregorian calendar date, convertible to and from
//! Arrow's `Date32` (days since 1970-01-01).
//!
//! Just enough calendar for q80's `d_date BETWEEN date AND date + 30 days`;
//! the engine has no `chrono` dependency. The conversions are Howard
//! Hinnant's `days_from_civil` / `civil_from_days` algorithms.

use std::fmt;
use std::str::FromStr;

use super::{Result, TpcdsError};

/// A valid calendar date (year, month 1-12, day 1-28..31).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SqlDate {
    year: i32,
    month: u32,
    day: u32,
}

impl SqlDate {
    /// The date `year-month-day`, or [`TpcdsError::InvalidDate`] if there is
    /// no such day.
    pub fn new(year: i32, month: u32, day: u32) -> Result<Self> {
        let valid = (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month)
            && (-9999..=9999).contains(&year);
        if valid {
            Ok(SqlDate { year, month, day })
        } else {
            Err(TpcdsError::InvalidDate(format!("{year}-{month}-{day}")))
        }
    }

    /// `const` constructor for dates known to be valid (checked at compile
    /// time when used in a `const`).
    pub const fn from_ymd_const(year: i32, month: u32, day: u32) -> Self {
        assert!(month >= 1 && month <= 12 && day >= 1 && day <= 31);
        SqlDate { year, month, day }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    pub fn day(self) -> u32 {
        self.day
    }

    /// Days since 1970-01-01, the Arrow `Date32` representation.
    pub fn to_date32(self) -> i32 {
        let y = if self.month <= 2 {
            self.year - 1
        } else {
            self.year
        };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400); // [0, 399]
        let m = self.month as i32;
        let mp = (m + 9) % 12; // March = 0
        let doy = (153 * mp + 2) / 5 + self.day as i32 - 1; // [0, 365]
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
        era * 146_097 + doe - 719_468
    }

    /// The date `days` days after 1970-01-01 (negative: before).
    pub fn from_date32(days: i32) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i32::from(month <= 2);
        SqlDate { year, month, day }
    }

    /// This date plus `days` days (SQL `date + INTERVAL n DAY`).
    pub fn add_days(self, days: i32) -> Self {
        Self::from_date32(self.to_date32() + days)
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl FromStr for SqlDate {
    type Err = TpcdsError;

    /// Parses `YYYY-MM-DD`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || TpcdsError::InvalidDate(s.to_string());
        let mut parts = s.trim().splitn(3, '-');
        let mut next = || parts.next().ok_or_else(bad);
        let (y, m, d) = (next()?, next()?, next()?);
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        let year = y.parse().map_err(|_| bad())?;
        let month = m.parse().map_err(|_| bad())?;
        let day = d.parse().map_err(|_| bad())?;
        SqlDate::new(year, month, day).map_err(|_| bad())
    }
}

impl fmt::Display for SqlDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_days() {
        assert_eq!(SqlDate::new(1970, 1, 1).unwrap().to_date32(), 0);
        assert_eq!(SqlDate::new(2000, 8, 23).unwrap().to_date32(), 11_192);
        assert_eq!(SqlDate::new(1969, 12, 31).unwrap().to_date32(), -1);
        assert_eq!(SqlDate::from_date32(11_192).to_string(), "2000-08-23");
    }

    #[test]
    fn q80_window_end() {
        let d: SqlDate = "2000-08-23".parse().unwrap();
        assert_eq!(d.add_days(30).to_string(), "2000-09-22");
        let leap: SqlDate = "2000-02-28".parse().unwrap();
        assert_eq!(leap.add_days(1).to_string(), "2000-02-29");
        assert_eq!(leap.add_days(2).to_string(), "2000-03-01");
    }

    #[test]
    fn round_trip_many_days() {
        for days in -800_000..800_000 {
            let d = SqlDate::from_date32(days);
            assert_eq!(SqlDate::new(d.year(), d.month(), d.day()).unwrap(), d);
            assert_eq!(d.to_date32(), days);
        }
    }

    #[test]
    fn rejects_invalid() {
        for s in [
            "2001-02-29",
            "2000-13-01",
            "2000-00-10",
            "2000-1-1",
            "x",
            "",
        ] {
            assert!(s.parse::<SqlDate>().is_err(), "{s}");
        }
        assert!("1900-02-29".parse::<SqlDate>().is_err());
        assert!("2000-02-29".parse::<SqlDate>().is_ok());
    }
}
