"""Complete, tested examples of hooks; copy one to start your own."""
