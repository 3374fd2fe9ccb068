"""What the teacher teaches (Tang et al. 2020, arXiv 2002.03532): ``analyze`` computes the knowledge and the
four-part decomposition of a trained teacher, ``report`` writes them (analysis.json, analysis.md, figures)."""
