"""The query service: a build's variants answer "items that look like this photo"."""
