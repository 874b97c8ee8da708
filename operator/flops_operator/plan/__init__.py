"""Pure planning: which services a project needs (desired), what to change (diff), placeholders."""
