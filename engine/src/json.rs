//! A small JSON object writer for run summaries (`JobSummary::to_json`, the
//! CLI's `--report`): keys in insertion order, strings escaped per RFC 8259,
//! non-finite floats written as `null`. Nested objects and arrays are built
//! as strings and added with [`Json::raw`] / [`Json::array`].

use std::fmt::Write as _;

/// One JSON object being written.
#[derive(Debug)]
pub struct Json {
    out: String,
    first: bool,
}

impl Default for Json {
    fn default() -> Self {
        Self::new()
    }
}

impl Json {
    pub fn new() -> Self {
        Self {
            out: "{".to_string(),
            first: true,
        }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        escape(&mut self.out, k);
        self.out.push(':');
    }

    /// `k` with an already-encoded JSON value.
    pub fn raw(&mut self, k: &str, v: &str) {
        self.key(k);
        self.out.push_str(v);
    }

    /// `k` with an array of already-encoded JSON values.
    pub fn array<I, S>(&mut self, k: &str, items: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.key(k);
        self.out.push('[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(item.as_ref());
        }
        self.out.push(']');
    }

    pub fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        let _ = write!(self.out, "{v}");
    }

    pub fn opt_num(&mut self, k: &str, v: Option<u64>) {
        match v {
            Some(v) => self.num(k, v),
            None => self.raw(k, "null"),
        }
    }

    /// Three decimals; `null` when not finite.
    pub fn f64(&mut self, k: &str, v: f64) {
        self.key(k);
        if v.is_finite() {
            let _ = write!(self.out, "{v:.3}");
        } else {
            self.out.push_str("null");
        }
    }

    pub fn bool(&mut self, k: &str, v: bool) {
        self.raw(k, if v { "true" } else { "false" });
    }

    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        escape(&mut self.out, v);
    }

    pub fn end(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Appends `s` as a quoted JSON string.
pub fn escape(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_object() {
        let mut j = Json::new();
        j.str("s", "a\"b\\c\n\u{1}");
        j.num("n", 7);
        j.opt_num("none", None);
        j.f64("f", 1.5);
        j.f64("inf", f64::INFINITY);
        j.bool("b", true);
        let mut inner = Json::new();
        inner.num("x", 1);
        j.array("arr", [inner.end(), "2".to_string()]);
        j.array("empty", Vec::<String>::new());
        assert_eq!(
            j.end(),
            r#"{"s":"a\"b\\c\n\u0001","n":7,"none":null,"f":1.500,"inf":null,"b":true,"arr":[{"x":1},2],"empty":[]}"#
        );
    }
}
