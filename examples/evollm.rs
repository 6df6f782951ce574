//! EvoLLM-JP in miniature: a Japanese LLM and two English math LLMs, none of which solves Japanese
//! arithmetic word problems, merged by an evolved DARE-TIES recipe that does.
//!
//!     cargo run --release --example evollm -- [--out DIR] [--seed N] [--trials N]

#[path = "world/mod.rs"]
mod world;

use evomerge_evolve::recipe::Metric;

fn main() -> anyhow::Result<()> {
    let opts = world::Options::parse("evollm", 150)?;
    world::run(
        &world::Experiment {
            name: "evollm",
            parents: vec![("llm_ja", "llm_ja"), ("math_a", "math_a"), ("math_b", "math_b")],
            search_data: "math_ja_search.jsonl",
            test_data: "math_ja_test.jsonl",
            metric: Metric::Accuracy,
            max_new_tokens: 16,
            layer_granularity: 2,
        },
        &opts,
    )
}
