"""The experiment config: the typed schema, YAML loading (defaults, overrides, references) and dotted paths."""
