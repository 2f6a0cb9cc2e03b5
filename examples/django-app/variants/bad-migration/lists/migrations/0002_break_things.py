"""bad-migration overlay: a migration that changes the real schema and data, then fails.

It is deliberately non-atomic, so on SQLite the changes made before the failure stay in the
database (a half-applied migration, as with many real-world failures): a deploy must notice that
`migrate` exited non-zero, keep the old release serving, and restore its pre-migration backup.

Damage left behind when not restored:
- column lists_item.flagged (NOT NULL, no database default): the old release can no longer add items;
- a list named "bad-migration marker" on the home page.
"""
from django.db import migrations, models


def change_data_then_fail(apps, schema_editor):
    List = apps.get_model("lists", "List")
    List.objects.create(name="bad-migration marker")
    raise RuntimeError("bad-migration variant: this migration always fails after changing the database")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("lists", "0001_initial")]

    operations = [
        migrations.AddField(model_name="item", name="flagged", field=models.BooleanField(default=False)),
        migrations.RunPython(change_data_then_fail, migrations.RunPython.noop),
    ]
