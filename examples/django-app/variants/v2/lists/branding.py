# v2 overlay: page title changes with the release.
SITE_TITLE = "To-Do lists v2"
