import time

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from lists.forms import ItemForm, ListForm
from lists.models import List


@require_http_methods(["GET", "POST"])
def home(request):
    form = ListForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        return redirect(form.save())
    return render(request, "lists/home.html", {"form": form, "lists": List.objects.all()[:50]})


@require_http_methods(["GET", "POST"])
def view_list(request, list_id):
    todo_list = get_object_or_404(List, id=list_id)
    form = ItemForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        item = form.save(commit=False)
        item.list = todo_list
        item.save()
        return redirect(todo_list)
    return render(request, "lists/list.html", {"list": todo_list, "form": form})


@never_cache
def session_counter(request):
    """Increments a counter kept in the (signed-cookie) session: proves sessions survive a
    SECRET_KEY rotation when the old key is in DJANGO_SECRET_KEY_FALLBACKS."""
    count = request.session.get("count", 0) + 1
    request.session["count"] = count
    return JsonResponse({"count": count, "release": settings.RELEASE})


@never_cache
def slow(request):
    """Answers after ?seconds=N (at most 10): lets tests keep a request in flight during a
    graceful stop or a traffic swap and check that it still completes."""
    try:
        seconds = min(max(float(request.GET.get("seconds", "2")), 0.0), 10.0)
    except ValueError:
        seconds = 2.0
    time.sleep(seconds)
    return JsonResponse({"slept": seconds, "release": settings.RELEASE})
