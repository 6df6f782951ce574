//! EvoVLM-JP in miniature: an English VLM and a Japanese LLM, neither of which answers Japanese
//! questions about images, merged by an evolved DARE-TIES recipe that does.
//!
//!     cargo run --release --example evovlm -- [--out DIR] [--seed N] [--trials N]

#[path = "world/mod.rs"]
mod world;

use evomerge_evolve::recipe::Metric;

fn main() -> anyhow::Result<()> {
    let opts = world::Options::parse("evovlm", 150)?;
    world::run(
        &world::Experiment {
            name: "evovlm",
            parents: vec![("vlm_en", "vlm_en"), ("llm_ja", "llm_ja")],
            search_data: "vqa_ja_search.jsonl",
            test_data: "vqa_ja_test.jsonl",
            metric: Metric::RougeLJa,
            max_new_tokens: 16,
            layer_granularity: 2,
        },
        &opts,
    )
}
