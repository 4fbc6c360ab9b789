//! The table the benchmarks print: each figure, compared where it applies with a ceiling
//! measured in the same run, then whether each compared figure meets its target. Figures, never
//! assertions: a slow machine makes a low ratio, not a failure.

/// A ceiling of a [`Report`], for figures to be compared with.
#[derive(Clone, Copy, Debug)]
pub struct Ceiling(usize);

struct Limit {
    name: String,
    value: f64,
    /// The share of the ceiling a compared figure must reach (0.5 is 50 %).
    target: f64,
}

struct Row {
    what: String,
    value: f64,
    unit: &'static str,
    against: Option<Ceiling>,
}

/// Rows printed as they come (on stderr) and as one table at the end (on stdout).
pub struct Report {
    decimals: usize,
    width: usize,
    ceilings: Vec<Limit>,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    /// An empty report: values with `decimals` digits after the point, names padded to `width`.
    pub fn new(decimals: usize, width: usize) -> Report {
        Report {
            decimals,
            width,
            ceilings: Vec::new(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A ceiling called `name` (as in "50 % of the raw QUIC ceiling"), 0 until [`Report::set`];
    /// a figure compared with it meets its target from `target` times it.
    pub fn ceiling(&mut self, name: impl Into<String>, target: f64) -> Ceiling {
        self.ceilings.push(Limit {
            name: name.into(),
            value: 0.0,
            target,
        });
        Ceiling(self.ceilings.len() - 1)
    }

    /// Sets (or raises, as better runs come in) a ceiling's value; ratios printed at the end
    /// use the last.
    pub fn set(&mut self, ceiling: Ceiling, value: f64) {
        self.ceilings[ceiling.0].value = value;
    }

    /// A ceiling's value so far.
    pub fn get(&self, ceiling: Ceiling) -> f64 {
        self.ceilings[ceiling.0].value
    }

    /// The value of the first row whose name starts with `prefix`.
    pub fn find(&self, prefix: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.what.starts_with(prefix))
            .map(|r| r.value)
    }

    /// Adds a figure, compared with `against` if given.
    pub fn add(
        &mut self,
        what: impl Into<String>,
        value: f64,
        unit: &'static str,
        against: Option<Ceiling>,
    ) {
        let what = what.into();
        let ratio = against
            .map(|c| {
                let limit = &self.ceilings[c.0];
                format!(
                    "  ({:.0}% of the {} so far)",
                    100.0 * value / limit.value,
                    limit.name
                )
            })
            .unwrap_or_default();
        eprintln!("  {what}: {value:.0$} {unit}{ratio}", self.decimals);
        self.rows.push(Row {
            what,
            value,
            unit,
            against,
        });
    }

    /// Adds a sentence printed after the targets.
    pub fn note(&mut self, note: String) {
        eprintln!("  note: {note}");
        self.notes.push(note);
    }

    /// Prints the table, the ceilings, each compared figure against its target, and the notes.
    pub fn print(&self) {
        let (w, d) = (self.width, self.decimals);
        println!();
        println!(
            "{:<w$} {:>10} {:<6} {:>7}",
            "figure", "value", "unit", "ratio"
        );
        for r in &self.rows {
            match r.against {
                Some(c) => println!(
                    "{:<w$} {:>10.d$} {:<6} {:>6.0}%",
                    r.what,
                    r.value,
                    r.unit,
                    100.0 * r.value / self.get(c)
                ),
                None => println!("{:<w$} {:>10.d$} {:<6}", r.what, r.value, r.unit),
            }
        }
        println!();
        for limit in &self.ceilings {
            println!("ceiling: {}: {:.d$}", limit.name, limit.value);
        }
        for r in &self.rows {
            let Some(c) = r.against else { continue };
            let limit = &self.ceilings[c.0];
            let ratio = r.value / limit.value;
            println!(
                "target: {} >= {:.0}% of the {}: {:.0}%: {}",
                r.what,
                100.0 * limit.target,
                limit.name,
                100.0 * ratio,
                if ratio >= limit.target {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
        for n in &self.notes {
            println!("note: {n}");
        }
    }
}
