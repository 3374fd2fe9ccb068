"""What a run tells people: report.json (typed), report.md with charts, the compare table."""
