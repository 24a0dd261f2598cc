"""The WSGI application Gunicorn loads (`serving.wsgi:app`), configured by KUBEDETECT_* variables.

Built with `start=False`: with `preload_app` Gunicorn's master imports this once, so the model
file is read and its sha256 checked before any worker forks, and each worker then warms up its
own interpreters before accepting connections (gunicorn.conf.py `post_worker_init`).
"""

from kubedetect.config import ServeConfig
from kubedetect.flags import from_env
from serving.app import create_app

config = from_env(ServeConfig)
app = create_app(config, start=False)
