"""The HTTP edge: routes that parse a request, call one use case and render its answer."""
