"""What the web app keeps: database tables and migrations, the content-addressed file store,
and the small repository of functions the services call."""
