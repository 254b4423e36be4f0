"""The doctors' web app and its JSON API (``mrimaster serve``): routes -> services -> storage."""
