from django import forms

from lists.models import Item, List


class ListForm(forms.ModelForm):
    class Meta:
        model = List
        fields = ["name"]
        widgets = {"name": forms.TextInput(attrs={"placeholder": "Name a new list", "autofocus": True})}


class ItemForm(forms.ModelForm):
    class Meta:
        model = Item
        fields = ["text"]
        widgets = {"text": forms.TextInput(attrs={"placeholder": "Enter a to-do item", "autofocus": True})}
