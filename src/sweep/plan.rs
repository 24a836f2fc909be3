//! What a sweep runs: the cartesian product of the `--vary` lists and the seeds, in a fixed
//! order (the first varied key outermost, seeds innermost), each run numbered from 1.

/// One `--vary KEY=V1,V2,...`: a dotted key (as `--set` takes) and its values as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Varied {
    pub key: String,
    pub values: Vec<String>,
}

impl Varied {
    /// Reads `KEY=V1,V2,...`. Values are TOML values as `--set` takes them; commas inside
    /// brackets, braces or quotes do not split (`--vary 'x=[1,2],[3,4]'` is two arrays).
    ///
    /// # Errors
    ///
    /// No `=`, no key, or an empty value.
    pub fn parse(arg: &str) -> Result<Self, String> {
        let Some((key, values)) = arg.split_once('=') else {
            return Err(format!(
                "--vary {arg}: expected KEY=V1,V2,..., as in --vary agents.0.params.epsilon=0.1,0.2,0.3"
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("--vary {arg}: the key is missing before `=`"));
        }
        let values = split_top_level(values);
        if values.iter().any(String::is_empty) {
            return Err(format!(
                "--vary {arg}: an empty value (two commas in a row, or one at an end)"
            ));
        }
        Ok(Varied {
            key: key.to_string(),
            values,
        })
    }
}

fn split_top_level(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut current = String::new();
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current.trim().to_string());
    parts
}

/// Reads `--seeds`: `A..B` (both included: `1..10` is ten seeds), `A..=B`, or a list
/// `1,2,5`.
///
/// # Errors
///
/// Not a range or a list of whole numbers, or an empty or huge range.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>, String> {
    let number = |s: &str| {
        s.trim().parse::<u64>().map_err(|_| {
            let s = s.trim();
            // `1-3` and `1:3` are ranges in other tools' spelling.
            let range = s
                .split_once(['-', ':'])
                .filter(|(a, b)| a.trim().parse::<u64>().is_ok() && b.trim().parse::<u64>().is_ok());
            match range {
                Some((a, b)) => format!(
                    "--seeds {text}: {s:?} is not a whole number from 0; a range is written {}..{} (both ends included)",
                    a.trim(),
                    b.trim()
                ),
                None => format!("--seeds {text}: {s:?} is not a whole number from 0"),
            }
        })
    };
    if let Some((a, b)) = text.split_once("..") {
        let (a, b) = (number(a)?, number(b.strip_prefix('=').unwrap_or(b))?);
        if b < a {
            return Err(format!("--seeds {text}: the range is empty ({b} is below {a})"));
        }
        if b - a >= 100_000 {
            return Err(format!("--seeds {text}: more than 100,000 seeds"));
        }
        return Ok((a..=b).collect());
    }
    let seeds: Vec<u64> = text.split(',').map(number).collect::<Result<_, _>>()?;
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = seeds.iter().find(|s| !seen.insert(**s)) {
        return Err(format!("--seeds {text}: seed {twice} is given twice"));
    }
    Ok(seeds)
}

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRun {
    /// From 1, in plan order.
    pub number: usize,
    /// The varied keys' values, in `--vary` order.
    pub values: Vec<(String, String)>,
    pub seed: u64,
}

impl PlannedRun {
    /// Its folder's name under the sweep's: `run-007` (zero-padded to the largest number).
    pub fn folder(&self, runs: usize) -> String {
        let width = runs.to_string().len().max(3);
        format!("run-{:0width$}", self.number)
    }

    /// `--set` arguments for its varied values.
    pub fn sets(&self) -> Vec<String> {
        self.values.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// Every combination of `varied` with every seed.
pub fn plan(varied: &[Varied], seeds: &[u64]) -> Vec<PlannedRun> {
    let mut combinations: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for v in varied {
        combinations = combinations
            .into_iter()
            .flat_map(|done| {
                v.values.iter().map(move |value| {
                    let mut next = done.clone();
                    next.push((v.key.clone(), value.clone()));
                    next
                })
            })
            .collect();
    }
    let mut runs = Vec::new();
    for values in combinations {
        for &seed in seeds {
            runs.push(PlannedRun {
                number: runs.len() + 1,
                values: values.clone(),
                seed,
            });
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varied_values_split_at_top_level_commas() {
        let v = Varied::parse("agents.0.params.epsilon=0.1, 0.2,0.3").unwrap();
        assert_eq!(v.key, "agents.0.params.epsilon");
        assert_eq!(v.values, ["0.1", "0.2", "0.3"]);
        let v = Varied::parse(r#"x=[1,2],"a,b",{ k = 1, j = 2 }"#).unwrap();
        assert_eq!(v.values, ["[1,2]", r#""a,b""#, "{ k = 1, j = 2 }"]);
        assert!(Varied::parse("x").is_err());
        assert!(Varied::parse("=1").is_err());
        assert!(Varied::parse("x=1,,2").is_err());
    }

    #[test]
    fn seeds_are_ranges_with_both_ends_or_lists() {
        assert_eq!(parse_seeds("1..3").unwrap(), [1, 2, 3]);
        assert_eq!(parse_seeds("1..=3").unwrap(), [1, 2, 3]);
        assert_eq!(parse_seeds("7,2").unwrap(), [7, 2]);
        assert!(parse_seeds("3..1").is_err());
        assert!(parse_seeds("1,x").is_err());
        assert!(parse_seeds("1,1").is_err());
        let other_spelling = parse_seeds("1-3").unwrap_err();
        assert!(
            other_spelling.ends_with("a range is written 1..3 (both ends included)"),
            "{other_spelling}"
        );
    }

    #[test]
    fn the_plan_is_the_product_with_seeds_innermost() {
        let varied = [Varied::parse("a=1,2").unwrap(), Varied::parse("b=x,y").unwrap()];
        let runs = plan(&varied, &[5, 6]);
        assert_eq!(runs.len(), 8);
        assert_eq!(
            runs[0].values,
            [("a".into(), "1".into()), ("b".into(), "x".into())]
        );
        assert_eq!((runs[1].seed, runs[2].values[1].1.as_str()), (6, "y"));
        assert_eq!(runs[7].number, 8);
        assert_eq!(runs[7].folder(8), "run-008");
        assert_eq!(plan(&[], &[1]).len(), 1);
    }
}
