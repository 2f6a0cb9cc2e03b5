"""Functional tests for the example to-do app, run against a live server (e.g. staging).

    TODO_BASE_URL=https://staging.example.test pytest examples/django-app/functional_tests

Standard library only (urllib + http.cookiejar), so they run anywhere pytest does.
Env:
  TODO_BASE_URL        base URL of the running app (required; the tests skip without it)
  TODO_CA_FILE         CA bundle for an https URL signed by a private CA (optional)
  TODO_EXPECT_RELEASE  release id that must answer (optional; checks /health and X-Release)
  TODO_EXPECT_STATIC   set when the URL serves /static/ (behind nginx) to check the stylesheet
"""
import http.cookiejar
import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

BASE_URL = os.environ.get("TODO_BASE_URL", "").rstrip("/")

pytestmark = pytest.mark.skipif(
    not BASE_URL, reason="TODO_BASE_URL is not set: no live to-do app to run the functional tests against"
)


class Browser:
    """Just enough of a browser: cookies, CSRF token from forms, Referer/Origin on POST."""

    def __init__(self):
        self.cookies = http.cookiejar.CookieJar()
        handlers = [urllib.request.HTTPCookieProcessor(self.cookies)]
        ca_file = os.environ.get("TODO_CA_FILE")
        if ca_file:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca_file)))
        self.opener = urllib.request.build_opener(*handlers)
        self.last_url = BASE_URL + "/"

    def request(self, path, data=None, headers=None):
        url = path if path.startswith("http") else BASE_URL + path
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(url, data=body, headers=dict(headers or {}))
        if body is not None:
            # Django checks Origin (and Referer for https) on unsafe requests, like a browser sends.
            parts = urllib.parse.urlsplit(url)
            req.add_header("Origin", f"{parts.scheme}://{parts.netloc}")
            req.add_header("Referer", self.last_url)
        try:
            resp = self.opener.open(req, timeout=15)
        except urllib.error.HTTPError as err:
            resp = err
        with resp:
            text = resp.read().decode("utf-8", "replace")
            status, final_url, resp_headers = resp.status, resp.geturl(), resp.headers
        if status < 400:
            self.last_url = final_url
        return status, final_url, resp_headers, text

    def get(self, path):
        return self.request(path)

    def submit(self, page_html, form_id, fields):
        """POST a form found in page_html (by id) with its CSRF token plus the given fields."""
        form = re.search(r'<form[^>]*id="%s"[^>]*>(.*?)</form>' % re.escape(form_id), page_html, re.S)
        assert form, f"form #{form_id} not found on the page"
        action = re.search(r'action="([^"]*)"', form.group(0)).group(1)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.group(1))
        assert token, f"form #{form_id} has no CSRF token"
        return self.request(action, {"csrfmiddlewaretoken": token.group(1), **fields})


def title_of(html):
    m = re.search(r"<title>(.*?)</title>", html, re.S)
    return m.group(1).strip() if m else None


@pytest.fixture
def browser():
    return Browser()


def test_health_reports_ok_and_release(browser):
    status, _, headers, text = browser.get("/health")
    assert status == 200, text
    body = json.loads(text)
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["release"], "release id missing from /health"
    assert headers["X-Release"] == body["release"]
    expected = os.environ.get("TODO_EXPECT_RELEASE")
    if expected:
        assert body["release"] == expected


def test_home_page_has_title_and_new_list_form(browser):
    status, _, headers, html = browser.get("/")
    assert status == 200
    assert title_of(html).startswith("To-Do lists")
    assert 'id="new-list"' in html
    assert "csrfmiddlewaretoken" in html
    assert headers.get("X-Release")


def test_create_list_add_items_and_see_them(browser):
    name = f"Groceries {uuid.uuid4().hex[:8]}"
    _, _, _, home = browser.get("/")
    status, list_url, _, page = browser.submit(home, "new-list", {"name": name})
    assert status == 200, page[:500]
    assert re.search(r"/lists/\d+/$", list_url), list_url
    assert name in page
    assert "Nothing to do yet." in page

    status, url, _, page = browser.submit(page, "new-item", {"text": "Buy peacock feathers"})
    assert status == 200 and url == list_url
    assert "1: Buy peacock feathers" in page

    status, _, _, page = browser.submit(page, "new-item", {"text": "Make a fly"})
    assert "1: Buy peacock feathers" in page
    assert "2: Make a fly" in page

    # The list is on the home page and its page still shows the items on a fresh visit.
    _, _, _, home = Browser().get("/")
    assert name in home
    _, _, _, page = Browser().get(list_url)
    assert "2: Make a fly" in page


def test_lists_do_not_share_items(browser):
    _, _, _, home = browser.get("/")
    _, first_url, _, first = browser.submit(home, "new-list", {"name": f"First {uuid.uuid4().hex[:6]}"})
    browser.submit(first, "new-item", {"text": "only in the first list"})
    _, _, _, home = browser.get("/")
    _, second_url, _, second = browser.submit(home, "new-list", {"name": f"Second {uuid.uuid4().hex[:6]}"})
    assert first_url != second_url
    assert "only in the first list" not in second


def test_empty_item_is_rejected(browser):
    _, _, _, home = browser.get("/")
    _, list_url, _, page = browser.submit(home, "new-list", {"name": f"Empty {uuid.uuid4().hex[:6]}"})
    status, _, _, page = browser.submit(page, "new-item", {"text": ""})
    assert status == 200
    assert "This field is required" in page
    assert "Nothing to do yet." in page


def test_post_without_csrf_token_is_refused(browser):
    browser.get("/")
    status, _, _, _ = browser.request("/", {"name": "no token"})
    assert status == 403


def test_session_counter_increments(browser):
    counts = [json.loads(browser.get("/session/")[3])["count"] for _ in range(3)]
    assert counts == [counts[0], counts[0] + 1, counts[0] + 2]


@pytest.mark.skipif(not os.environ.get("TODO_EXPECT_STATIC"), reason="TODO_EXPECT_STATIC not set")
def test_stylesheet_is_served(browser):
    _, _, _, html = browser.get("/")
    href = re.search(r'<link rel="stylesheet" href="([^"]+)"', html).group(1)
    status, _, _, css = browser.get(href)
    assert status == 200
    assert "body" in css
