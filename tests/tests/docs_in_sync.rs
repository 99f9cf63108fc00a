//! The README's configuration tables are generated from the code; this test
//! fails when they drift. Run with `SHOVEL_BLESS=1` to rewrite them.

use std::path::PathBuf;

fn readme() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

fn splice(text: &str, marker: &str, table: &str) -> String {
    let open = format!("<!-- keys:{marker} -->\n");
    let close = format!("<!-- /keys:{marker} -->");
    let start = text
        .find(&open)
        .unwrap_or_else(|| panic!("README lacks {open}"))
        + open.len();
    let end = text
        .find(&close)
        .unwrap_or_else(|| panic!("README lacks {close}"));
    format!("{}{}{}", &text[..start], table, &text[end..])
}

#[test]
fn readme_config_tables_match_the_code() {
    let path = readme();
    let text = std::fs::read_to_string(&path).expect("README.md");
    let want = splice(&text, "core", &shuffle_core::config::markdown_table());
    let want = splice(&want, "s3", &shuffle_s3::config::markdown_table());
    if std::env::var_os("SHOVEL_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write README.md");
        return;
    }
    assert!(
        text == want,
        "README.md config tables are out of date: run `SHOVEL_BLESS=1 cargo test -p shovel-tests --test docs_in_sync`"
    );
}
