//! The static dependency graph: the successors the service itself declares for each request
//! type (`next` in the service metadata), with their weights. Needs no history.

use std::sync::Arc;

use super::{top_k, Prediction, Predictor, SessionContext};
use crate::{metadata::ServiceCatalogue, vocab::Vocabulary};

/// Predicts the declared successors of the last request.
#[derive(Debug)]
pub struct StaticGraph {
    vocab: Arc<Vocabulary>,
    /// `next[t]`: dense weights of the declared successors of type `t`.
    next: Vec<Vec<f32>>,
}

impl StaticGraph {
    /// The graph of `catalogue` over `vocab` (types the vocabulary lacks are left out).
    pub fn new(vocab: Arc<Vocabulary>, catalogue: &ServiceCatalogue) -> Self {
        let v = vocab.len();
        let mut next = vec![Vec::new(); v];
        for r in &catalogue.requests {
            let Some(from) = vocab.get(&r.name) else {
                continue;
            };
            let mut row = vec![0f32; v];
            for (name, w) in &r.next {
                if let Some(to) = vocab.get(name) {
                    row[to as usize] += w;
                }
            }
            next[from as usize] = row;
        }
        Self { vocab, next }
    }
}

impl Predictor for StaticGraph {
    fn name(&self) -> &str {
        "static-graph"
    }

    fn vocabulary(&self) -> &Arc<Vocabulary> {
        &self.vocab
    }

    fn predict(&self, context: &SessionContext, k: usize) -> Vec<Prediction> {
        context
            .last()
            .and_then(|t| self.next.get(t as usize))
            .map(|row| top_k(row, k))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_declared_links_with_weights() {
        let cat = ServiceCatalogue::default_catalogue();
        let vocab = Arc::new(cat.vocabulary());
        let g = StaticGraph::new(vocab.clone(), &cat);
        let ctx = SessionContext::from_names(&vocab, &["cart"]);
        let p = g.predict(&ctx, 5);
        let names: Vec<_> = p.iter().map(|p| vocab.name(p.kind).unwrap()).collect();
        assert_eq!(names, ["shipping_details", "catalog", "product_view"]);
        assert!((p[0].probability - 0.6).abs() < 1e-6);
        assert!(g.predict(&SessionContext::from_ids(&[0]), 3).is_empty());
        assert!(g.predict(&SessionContext::new(), 3).is_empty());
    }
}
