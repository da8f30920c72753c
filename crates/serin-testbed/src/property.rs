//! Property passes over untrusted inputs, shared by the projects' `tests/inputs.rs`: a seeded
//! generator of inputs, a check run on each under `catch_unwind`, and YAML mutations of example
//! documents. A panic fails the test with the input that caused it. Pure.

use std::panic::AssertUnwindSafe;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Runs `check` on `cases` inputs made by `generate` (seeded from `name`, so a failure
/// reproduces); a panic fails the test naming the pass and the input. Returns `cases`.
pub fn pass(
    name: &str,
    cases: usize,
    mut generate: impl FnMut(&mut StdRng) -> String,
    check: impl Fn(&str),
) -> usize {
    let seed = name
        .bytes()
        .fold(0x5e41_u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..cases {
        let input = generate(&mut rng);
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| check(&input))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{name}: {message}\n--- input ---\n{input}");
        }
    }
    cases
}

/// One to three mutations of a YAML document `seed`: a scalar replaced by one of `interesting`,
/// a line dropped or repeated, a byte changed, or the text cut short.
pub fn mutate(rng: &mut StdRng, seed: &str, interesting: &[&str]) -> String {
    let mut lines: Vec<String> = seed.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        return seed.to_owned();
    }
    for _ in 0..rng.random_range(1..4) {
        let i = rng.random_range(0..lines.len());
        match rng.random_range(0..6) {
            0 | 1 if !interesting.is_empty() => {
                if let Some(at) = lines[i].find(": ") {
                    let value = interesting[rng.random_range(0..interesting.len())];
                    lines[i] = format!("{}: {value}", &lines[i][..at]);
                }
            }
            2 if lines.len() > 1 => {
                lines.remove(i);
            }
            3 => {
                let line = lines[i].clone();
                lines.insert(i, line);
            }
            4 => {
                let mut bytes = lines[i].clone().into_bytes();
                if !bytes.is_empty() {
                    let j = rng.random_range(0..bytes.len());
                    const BYTES: &[u8] = b" :-[]{}#&*!|>'\"%@`0123456789";
                    bytes[j] = BYTES[rng.random_range(0..BYTES.len())];
                }
                lines[i] = String::from_utf8_lossy(&bytes).into_owned();
            }
            5 => lines.truncate(i.max(1)),
            _ => {}
        }
    }
    lines.join("\n") + "\n"
}

/// One of `seeds`, mutated.
pub fn mutate_one(rng: &mut StdRng, seeds: &[String], interesting: &[&str]) -> String {
    let seed = &seeds[rng.random_range(0..seeds.len())];
    mutate(rng, seed, interesting)
}

/// Text made of `0..max` pieces drawn from `alphabet`.
pub fn pieces(rng: &mut StdRng, alphabet: &[&str], max: usize) -> String {
    (0..rng.random_range(0..max))
        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_names_the_input() {
        let caught = std::panic::catch_unwind(|| {
            pass("boom", 3, |_| "the input".to_owned(), |text| panic!("on {text}"))
        });
        let message = caught
            .expect_err("the pass fails")
            .downcast::<String>()
            .expect("a message");
        assert!(message.contains("boom: on the input"), "{message}");
        assert!(message.ends_with("--- input ---\nthe input"), "{message}");
    }

    #[test]
    fn mutations_change_the_seed_and_reproduce() {
        let seed = "a: 1\nb: 2\nc: 3\n";
        let run = || {
            let mut rng = StdRng::seed_from_u64(1);
            (0..50)
                .map(|_| mutate(&mut rng, seed, &["x"]))
                .collect::<Vec<_>>()
        };
        let out = run();
        assert_eq!(out, run());
        assert!(out.iter().filter(|m| m.as_str() != seed).count() > 25);
    }
}
