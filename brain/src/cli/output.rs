//! Printing results as tables, JSON or YAML.

use serde_json::Value;

use crate::Output;

/// Prints `value` as JSON or YAML, or as a table of `columns` (header, JSON pointer) per row.
pub fn print(value: &Value, output: Output, columns: &[(&str, &str)]) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(value).unwrap_or_default()),
        Output::Table => {
            let rows: Vec<&Value> = match value {
                Value::Array(a) => a.iter().collect(),
                v => vec![v],
            };
            table(&rows, columns);
        }
    }
}

fn cell(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn table(rows: &[&Value], columns: &[(&str, &str)]) {
    let cells: Vec<Vec<String>> =
        rows.iter().map(|r| columns.iter().map(|(_, p)| cell(r, p)).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| cells.iter().map(|r| r[i].len()).chain([h.len()]).max().unwrap_or(0))
        .collect();
    let line = |items: Vec<String>| {
        let parts: Vec<String> = items.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(columns.iter().map(|(h, _)| h.to_string()).collect());
    for r in cells {
        line(r);
    }
}
