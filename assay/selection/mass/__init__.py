"""MASS: mathematical data selection via a skill graph (Li et al., ICML 2025, arXiv 2503.14917).

1. **Skills of a reference set** (the target examples: `fit_mass(targets, ...)`, the `mass`
   step's `targets`). The paper asks an LLM for 1-10 abstract skills per reference problem.
   Offline, assay takes them from one of three places:
   - `tags`: skill tags that come with the examples (for `assay_champ`, the CHAMP concepts each
     problem is annotated with; see `champ_skill_tags`);
   - `keyphrase`: per example, at most 10 1-3-word phrases that look like noun phrases (no stop
     word at either end, no sentence punctuation inside), shared by two examples and in at
     most half of them. Given a background (a sample of the pool to rank: `fit_mass(...,
     background=corpus)`, what the `mass` step does with its corpus) a phrase's weight is its
     lift, log(df in the examples / df in the background), and phrases less than twice as
     frequent in the examples are dropped: skills are what the target has more than the pool,
     not its most frequent words. Without one, the weight is TF-IDF over the examples alone.
     A keyphrase skill is embedded *in context*: the mean embedding of the example sentences
     it occurs in (a bare word like "users" lies near code that names users as much as near
     news about them). On BBC technology news against the demo pool, name-embedded keyphrases
     ranked the target's articles below the pool (AUC 0.33); in context and by lift, 0.97;
   - `cluster`: the examples are cut into sentences, the sentences embedded and k-means
     clustered; a skill is a cluster (named by its class-TF-IDF top terms), and an example has
     the skills its sentences fall in.
2. **Merge near-duplicates.** Skills whose names' embeddings have cosine > 0.9 are one skill.
   Pairs above the threshold are edges and the merged skills are their connected components,
   so the result does not depend on the order skills were met; a merged skill is named by its
   most frequent member.
3. **Skill graph.** Node weight `w_k = f_k / sum f` with `f_k` the number of reference examples
   having skill k (Eq. 1). Edges join skills that co-occur in at least `min_cooccurrence`
   examples, weighted by the normalised count (Eq. 2). `E` is stored symmetric (scipy.sparse,
   zero diagonal) with its whole matrix summing to 1, so `E_kl + E_lk` is the paper's
   `e_kl = c_kl / sum_{edges} c`: node and edge mass both total 1 in the quadratic form.
4. **Score of a document.** Its unit embedding's cosine to every skill embedding gives
   `s in R^K`; `s` keeps its `top_k` largest entries (negatives clipped to 0), which is what
   makes scoring against tens of thousands of skills tractable. Then
   - `quadratic` (default): `q = s^T (diag(w) + lambda * E) s`
     = `sum_k w_k s_k^2 + lambda * sum_{k != l} E_kl s_k s_l`;
   - `linear`: `q = w^T s`.
   The paper says a document scores high when it covers important skills *or skill pairs that
   often co-occur*, with similarities "aggregated through the adjacency matrix". Only the
   quadratic form uses the edges: it rewards a document for covering both ends of a frequent
   pair, which the linear form (a weighted sum over nodes) cannot see. The exact formula is
   not published (no code was released), hence both forms; the quadratic is the default.

**Skill embedding.** A skill's embedding is the frequency-weighted mean of its members'
embeddings, renormalised: the embedding of the skill's name (a tag) or of its sentences (a
keyphrase) when nothing merged into it, the k-means centroid for a cluster skill. The mean (rather than the representative name alone)
keeps a merged skill at the centre of its group, which single-linkage merging can stretch.

**The 0.9 merge threshold** is the paper's, for a sentence encoder. The static embedder's
cosines run higher on formula-heavy text: on CHAMP's 93 concept names, 4 pairs exceed 0.9 with
all-MiniLM-L6-v2 but 118 with the static model (93 skills merge to 89 vs 58). Raise
`merge_threshold` (~0.97) with a static model if the merged groups in the report look too
coarse; on short keyphrases both models agree (18 vs 21 pairs above 0.9).

Scoring embeds every document (no distilled classifier), so it runs at the embedder's speed:
the static embedder about 2,000 documents a second on two CPU cores, all-MiniLM-L6-v2 a few
dozen; the similarity and graph products add a few per cent for a hundred skills (at the
paper's 46K skills they cost about as much as static embedding). Document embeddings are not
written to the embedding cache unless `cache_documents=True`, so scoring a corpus does not
leave a copy of it on disk.

The package: `skills` (a reference set's skills: tags, keyphrases, clusters), `graph` (merging
near-duplicates, the weighted skill graph), `scoring` (document-skill similarities and the graph
score), `reference` (target sets and their tags) and `scorer` (`MassScorer`, `MassSettings`,
`fit_mass`).
"""

from assay.selection.mass.graph import (
    SkillGraph,
    build_skill_graph,
    graph_edges,
    merge_skills,
    similar_pairs,
    skill_rows,
    top_edges,
)
from assay.selection.mass.reference import champ_skill_tags, load_reference
from assay.selection.mass.scorer import (
    REPORT_FILE,
    SKILL_SOURCES,
    SKILLS_FILE,
    STATE_FILE,
    MassScorer,
    MassSettings,
    SkillSource,
    fit_mass,
)
from assay.selection.mass.scoring import (
    AGGREGATIONS,
    Aggregation,
    check_finite,
    graph_scores,
    skill_similarities,
    unit_rows,
)
from assay.selection.mass.skills import (
    CONNECTORS,
    GENERIC_NOUNS,
    NOT_HEADS,
    TASK_WORDS,
    RawSkills,
    cluster_skills,
    context_skills,
    incidence_from_lists,
    keyphrase_skills,
    named_skills,
    normalize_tags,
    phrase_candidates,
    phrase_lift,
    split_sentences,
)

__all__ = [
    "AGGREGATIONS",
    "CONNECTORS",
    "GENERIC_NOUNS",
    "NOT_HEADS",
    "REPORT_FILE",
    "SKILLS_FILE",
    "SKILL_SOURCES",
    "STATE_FILE",
    "TASK_WORDS",
    "Aggregation",
    "MassScorer",
    "MassSettings",
    "RawSkills",
    "SkillGraph",
    "SkillSource",
    "build_skill_graph",
    "champ_skill_tags",
    "check_finite",
    "cluster_skills",
    "context_skills",
    "fit_mass",
    "graph_edges",
    "graph_scores",
    "incidence_from_lists",
    "keyphrase_skills",
    "load_reference",
    "merge_skills",
    "named_skills",
    "normalize_tags",
    "phrase_candidates",
    "phrase_lift",
    "similar_pairs",
    "skill_rows",
    "skill_similarities",
    "split_sentences",
    "top_edges",
    "unit_rows",
]
