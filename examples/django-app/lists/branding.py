# Overridden by variants (see variants/v2/lists/branding.py).
SITE_TITLE = "To-Do lists"
