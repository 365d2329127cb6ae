//! The guide's text lives in `docs/guide.md`, where it reads as Markdown too; its code blocks
//! run as doc tests. The tour and the PyTorch → torchlet table are the README's: the test
//! below keeps the two copies equal.

#![doc = include_str!("../docs/guide.md")]

#[cfg(test)]
mod tests {
    const README: &str = include_str!("../README.md");
    const GUIDE: &str = include_str!("../docs/guide.md");

    /// The README's tour: the first Rust block of its section, and the table rows.
    fn readme_tour() -> Vec<&'static str> {
        let heading = "## A short tour for PyTorch users";
        let start = README.find(heading).expect("the README's tour section") + heading.len();
        let section = &README[start..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        let code = section.split("```rust\n").nth(1).expect("the tour's code");
        let code = &code[..code.find("```").expect("the end of the tour's code")];
        let rows = section.lines().filter(|l| l.starts_with('|'));
        code.lines().chain(rows).collect()
    }

    #[test]
    fn guide_holds_the_readme_tour_and_table() {
        let lines = readme_tour();
        assert!(lines.len() > 40, "the README's tour and table: {lines:?}");
        for line in lines {
            assert!(
                GUIDE.lines().any(|g| g == line),
                "docs/guide.md lacks this line of the README's tour or table; copy it over:\n{line}"
            );
        }
    }
}
