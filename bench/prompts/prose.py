"""Open prose prompts for bench/speculative.py: answers that repeat little of their prompt, where
prompt-lookup speculation finds few matches and must cost (almost) nothing."""

# (name, user message)
PROSE = (
    ("story: lighthouse", "Write a short story about a lighthouse keeper who finds a message in a bottle."),
    ("explain: seasons", "Explain to a curious ten-year-old why the Earth has seasons."),
    ("letter: neighbour", "Write a friendly letter to a new neighbour inviting them to a garden party."),
    ("essay: cities", "Describe what makes a city pleasant to walk in, in a few paragraphs."),
)
