from django.urls import path

from lists import views

urlpatterns = [
    path("", views.home, name="home"),
    path("lists/<int:list_id>/", views.view_list, name="view_list"),
    path("session/", views.session_counter, name="session"),
    path("slow/", views.slow, name="slow"),
]
