# gunicorn settings for the example app (the image runs: gunicorn -c /app/gunicorn.conf.py).
import os

bind = "0.0.0.0:8000"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
# On SIGTERM: stop accepting, let in-flight requests finish for up to 20 s, then exit.
graceful_timeout = 20
keepalive = 5
accesslog = "-"  # stdout
errorlog = "-"  # stderr
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(D)sus "%(a)s"'
# Only the local reverse proxy can reach the published port; trust its X-Forwarded-* headers.
forwarded_allow_ips = "*"
# The runtime control socket (gunicorn >= 25.1) would go under $HOME, which is read-only here.
control_socket_disable = True
worker_tmp_dir = "/dev/shm"
