//! Which config files a package allows, and their modes: `outpost/config-files`.
//!
//! One rule a line, `pattern mode`: `/conf.d/*.d/*.yaml 0640`. Blank lines and lines starting
//! with `#` are ignored. A pattern starts with `/` (the config root); in a segment `*` matches
//! any run of characters and `?` one character (never a `/`); a segment that is exactly `**`
//! matches any number of segments, none included. The first rule that matches a path gives
//! its mode. A package without the file gets [`Rules::defaults`]; the `datadog-agent`
//! package gets [`Rules::datadog_agent`].

use std::io::Read as _;
use std::path::Path;

use crate::error::{ConfigError, RuleProblem};
use crate::path::ConfigPath;

/// Where a package declares its config files, relative to its version directory.
pub const CONFIG_FILES: &str = "outpost/config-files";
/// The largest rules file read.
const MAX_RULES_BYTES: u64 = 64 * 1024;

/// One allowed pattern and the mode its files get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pattern: Pattern,
    mode: u32,
}

impl Rule {
    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern.text
    }

    /// The mode (permission bits, at most `0o777`).
    pub fn mode(&self) -> u32 {
        self.mode
    }
}

/// A package's allowed config files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// `/*.yaml 0640` and `/conf.d/**/*.yaml 0640`: for a package that declares nothing.
    pub fn defaults() -> Self {
        Self::from_static(&[("/*.yaml", 0o640), ("/conf.d/**/*.yaml", 0o640)])
    }

    /// The Datadog Agent's config files, for the `datadog-agent` package when it declares
    /// nothing.
    pub fn datadog_agent() -> Self {
        Self::from_static(&[
            ("/datadog.yaml", 0o640),
            ("/otel-config.yaml", 0o640),
            ("/security-agent.yaml", 0o640),
            ("/system-probe.yaml", 0o640),
            ("/application_monitoring.yaml", 0o644),
            ("/conf.d/*.yaml", 0o640),
            ("/conf.d/*.d/*.yaml", 0o640),
        ])
    }

    /// No file allowed (a plan validated without a package's rules).
    pub(crate) fn none() -> Self {
        Self { rules: Vec::new() }
    }

    fn from_static(list: &[(&str, u32)]) -> Self {
        Self {
            rules: list
                .iter()
                .filter_map(|(p, mode)| {
                    Pattern::parse(p).map(|pattern| Rule {
                        pattern,
                        mode: *mode,
                    })
                })
                .collect(),
        }
    }

    /// The default rules of a package that has no rules file.
    pub fn default_for(package: &str) -> Self {
        if package == "datadog-agent" {
            Self::datadog_agent()
        } else {
            Self::defaults()
        }
    }

    /// Parses the text of a rules file; `file` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Rules`] naming the first invalid line.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |problem| ConfigError::Rules {
                file: file.to_path_buf(),
                line: n + 1,
                problem,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [pattern, mode] = fields.as_slice() else {
                return Err(err(RuleProblem::Fields));
            };
            let pattern = Pattern::parse(pattern).ok_or_else(|| err(RuleProblem::Pattern))?;
            let mode = parse_mode(mode).ok_or_else(|| err(RuleProblem::Mode))?;
            rules.push(Rule { pattern, mode });
        }
        Ok(Self { rules })
    }

    /// The rules of a package whose version directory is `version_dir`: its
    /// `outpost/config-files` when it has one, else [`Rules::default_for`] its name.
    ///
    /// # Errors
    /// [`ConfigError::Rules`] for an invalid file; [`ConfigError::Symlink`] when the file is a
    /// symbolic link; [`ConfigError::TooLarge`] over 64 KiB; [`ConfigError::Io`] when it
    /// cannot be read.
    pub fn for_package(package: &str, version_dir: &Path) -> Result<Self, ConfigError> {
        let file = version_dir.join(CONFIG_FILES);
        let meta = match fs_err::symlink_metadata(&file) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default_for(package));
            }
            Err(e) => return Err(ConfigError::io("inspect", &file, e)),
        };
        if !meta.is_file() {
            return Err(ConfigError::Symlink {
                path: file.display().to_string(),
            });
        }
        if meta.len() > MAX_RULES_BYTES {
            return Err(ConfigError::TooLarge {
                path: file.display().to_string(),
                size: meta.len(),
                limit: MAX_RULES_BYTES,
            });
        }
        let mut text = String::new();
        fs_err::File::open(&file)
            .and_then(|f| f.take(MAX_RULES_BYTES).read_to_string(&mut text))
            .map_err(|e| ConfigError::io("read", &file, e))?;
        Self::parse(&text, &file)
    }

    /// The mode of `path` (the first matching rule's), `None` when no rule allows it.
    pub fn mode_for(&self, path: &ConfigPath) -> Option<u32> {
        self.rules
            .iter()
            .find(|r| r.pattern.matches(path.segments()))
            .map(|r| r.mode)
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// Octal permission bits, 3 or 4 digits, at most `0777` (no setuid, setgid or sticky bit).
fn parse_mode(s: &str) -> Option<u32> {
    if !(3..=4).contains(&s.len()) || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o777)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `**`: any number of segments.
    Any,
    /// A segment with `*` and `?` wildcards.
    Glob(Vec<char>),
}

impl Pattern {
    fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix('/')?;
        let mut segments = Vec::new();
        for s in rest.split('/') {
            match s {
                "" | "." | ".." => return None,
                "**" => segments.push(Segment::Any),
                s if s.contains("**") || s.contains(['[', ']', '{', '}', '\\', '\0']) => {
                    return None;
                }
                s => segments.push(Segment::Glob(s.chars().collect())),
            }
        }
        Some(Self {
            text: text.to_owned(),
            segments,
        })
    }

    fn matches(&self, path: &[String]) -> bool {
        match_segments(&self.segments, path)
    }
}

/// Whether the pattern's segments match the path's: dynamic programming over (pattern
/// suffix, path suffix), so any number of `**` stays linear in each.
fn match_segments(pattern: &[Segment], path: &[String]) -> bool {
    let names: Vec<Vec<char>> = path.iter().map(|s| s.chars().collect()).collect();
    let n = names.len();
    // next[j]: pattern[i + 1..] matches path[j..].
    let mut next = vec![false; n + 1];
    next[n] = true;
    for segment in pattern.iter().rev() {
        let mut current = vec![false; n + 1];
        for j in (0..=n).rev() {
            current[j] = match segment {
                Segment::Any => next[j] || (j < n && current[j + 1]),
                Segment::Glob(glob) => j < n && next[j + 1] && match_glob(glob, &names[j]),
            };
        }
        next = current;
    }
    next[0]
}

/// `*` and `?` within one segment (iterative, with backtracking to the last `*`).
fn match_glob(glob: &[char], name: &[char]) -> bool {
    let (mut g, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match glob.get(g) {
            Some('*') => {
                star = Some((g, n));
                g += 1;
            }
            Some('?') => {
                g += 1;
                n += 1;
            }
            Some(c) if *c == name[n] => {
                g += 1;
                n += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    g = sg + 1;
                    n = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ConfigPath {
        ConfigPath::parse(s).unwrap()
    }

    #[test]
    fn defaults_allow_top_level_and_conf_d_yaml() {
        let rules = Rules::defaults();
        assert_eq!(rules.mode_for(&p("/app.yaml")), Some(0o640));
        assert_eq!(rules.mode_for(&p("/conf.d/x.yaml")), Some(0o640));
        assert_eq!(rules.mode_for(&p("/conf.d/a/b/c.yaml")), Some(0o640));
        assert_eq!(rules.mode_for(&p("/other/x.yaml")), None);
        assert_eq!(rules.mode_for(&p("/app.json")), None);
        assert_eq!(rules.mode_for(&p("/")), None);
    }

    #[test]
    fn datadog_list() {
        let rules = Rules::default_for("datadog-agent");
        assert_eq!(rules.mode_for(&p("/datadog.yaml")), Some(0o640));
        assert_eq!(
            rules.mode_for(&p("/application_monitoring.yaml")),
            Some(0o644)
        );
        assert_eq!(rules.mode_for(&p("/conf.d/redis.d/conf.yaml")), Some(0o640));
        assert_eq!(rules.mode_for(&p("/conf.d/a/b/c.yaml")), None);
        assert_eq!(rules.mode_for(&p("/other.yaml")), None);
    }

    #[test]
    fn parse_a_rules_file() {
        let text = "# comment\n\n/conf.d/*.d/*.yaml 0640\n/app.json   600\n/**/x?.yml 0644\n";
        let rules = Rules::parse(text, Path::new("f")).unwrap();
        assert_eq!(rules.rules().len(), 3);
        assert_eq!(rules.mode_for(&p("/conf.d/a.d/b.yaml")), Some(0o640));
        assert_eq!(rules.mode_for(&p("/app.json")), Some(0o600));
        assert_eq!(rules.mode_for(&p("/x1.yml")), Some(0o644));
        assert_eq!(rules.mode_for(&p("/deep/er/x1.yml")), Some(0o644));
        assert_eq!(rules.mode_for(&p("/x12.yml")), None);
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line, problem) in [
            ("/a.yaml", 1, RuleProblem::Fields),
            ("\n/a.yaml 0640 extra", 2, RuleProblem::Fields),
            ("a.yaml 0640", 1, RuleProblem::Pattern),
            ("/../a.yaml 0640", 1, RuleProblem::Pattern),
            ("/a//b 0640", 1, RuleProblem::Pattern),
            ("/[ab].yaml 0640", 1, RuleProblem::Pattern),
            ("/a**.yaml 0640", 1, RuleProblem::Pattern),
            ("/a.yaml 4755", 1, RuleProblem::Mode),
            ("/a.yaml 0648", 1, RuleProblem::Mode),
            ("/a.yaml rw", 1, RuleProblem::Mode),
        ] {
            match Rules::parse(text, Path::new("pkg/outpost/config-files")) {
                Err(ConfigError::Rules {
                    line: l,
                    problem: pr,
                    ..
                }) => assert_eq!((l, pr), (line, problem), "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn globs() {
        let g = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(match_glob(&g("*.yaml"), &g("a.yaml")));
        assert!(match_glob(&g("*.yaml"), &g(".yaml")));
        assert!(!match_glob(&g("*.yaml"), &g("a.yml")));
        assert!(match_glob(&g("a*b*c"), &g("aXbYbc")));
        assert!(match_glob(&g("*"), &g("")));
        assert!(!match_glob(&g("?"), &g("")));
    }

    #[test]
    fn rules_file_of_a_package() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Rules::for_package("demo", dir.path()).unwrap(),
            Rules::defaults()
        );
        assert_eq!(
            Rules::for_package("datadog-agent", dir.path()).unwrap(),
            Rules::datadog_agent()
        );
        fs_err::create_dir(dir.path().join("outpost")).unwrap();
        fs_err::write(dir.path().join(CONFIG_FILES), "/only.json 0600\n").unwrap();
        let rules = Rules::for_package("demo", dir.path()).unwrap();
        assert_eq!(rules.mode_for(&p("/only.json")), Some(0o600));
        assert_eq!(rules.mode_for(&p("/x.yaml")), None);
        fs_err::remove_file(dir.path().join(CONFIG_FILES)).unwrap();
        fs_err::os::unix::fs::symlink("/etc/passwd", dir.path().join(CONFIG_FILES)).unwrap();
        assert!(matches!(
            Rules::for_package("demo", dir.path()),
            Err(ConfigError::Symlink { .. })
        ));
    }
}
