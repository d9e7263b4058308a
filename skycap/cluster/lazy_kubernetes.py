"""Import the Kubernetes client's big packages name by name, on first use.

`import kubernetes` runs package files that import every API class and all ~650 models, and the
kubeconfig loader imports Google's auth library for an auth provider few kubeconfigs still
use: 0.4 s of a deploy's or a status's start, for the handful of names Skycap uses. The finder
installed here gives `kubernetes`, `kubernetes.client`, `kubernetes.client.api` and
`kubernetes.client.models` module objects that import a name when it is first read, from the same
`from X import Name` lines the package file holds, and runs each module of DEFERRED_MODULES only
when something in it is first read (or called, for CALLED_LATER). A package file without such
lines (another client layout) runs as usual, and so does everything else.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys

LAZY_PACKAGES = ("kubernetes", "kubernetes.client", "kubernetes.client.api", "kubernetes.client.models")
# What the client imports for features Skycap does not use: Google's auth (the kubeconfig's gcp
# provider), OAuth (its OIDC refresh), date parsing (model objects; Skycap reads plain JSON) and a
# process pool (asynchronous calls). About 0.05 s of every command that talks to the cluster.
# (A package whose submodules import each other in a circle, such as requests, cannot be deferred:
# its submodules rely on its __init__ having run first.)
DEFERRED_MODULES = ("google.auth", "google.auth.transport.requests", "oauthlib.oauth2", "requests_oauthlib",
                    "dateutil.parser", "multiprocessing", "multiprocessing.pool")
# Names the client takes from those modules as it is imported (`from X import Name`) and only ever
# calls: each gets a stand-in that runs its module on the first call.
CALLED_LATER = {"requests_oauthlib": ("OAuth2Session",), "dateutil.parser": ("parse",),
                "multiprocessing.pool": ("ThreadPool",)}
# `re` and `threading` are imported when a package is first loaded: `skycap --help` needs neither.
IMPORT_LINE = r"^from (kubernetes[\w.]*) import (\w+)\s*$"
VERSION_LINE = r"^__version__ = [\"']([^\"']+)[\"']"


class LazyPackageFinder:
    """A sys.meta_path finder for the packages and modules above; the normal path finder has the rest."""

    def find_spec(self, name, path=None, target=None):
        if name not in LAZY_PACKAGES and name not in DEFERRED_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not spec.origin:
            return None
        spec.loader = LazyPackageLoader(spec.loader)
        return spec


class LazyPackageLoader:
    def __init__(self, real_loader):
        self.real_loader = real_loader

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        if module.__name__ in DEFERRED_MODULES:
            module.__getattr__ = runs_on_first_read(module, self.real_loader)
            return
        import re

        with open(module.__spec__.origin, encoding="utf-8") as file:
            text = file.read()
        names = {name: source for source, name in re.findall(IMPORT_LINE, text, re.M)}
        if not names and module.__name__ != "kubernetes":  # not the layout this was written for
            self.real_loader.exec_module(module)
            return
        version = re.search(VERSION_LINE, text, re.M)
        if version:
            module.__version__ = version.group(1)
        module.__getattr__ = imports_on_first_read(module, names)


def imports_on_first_read(module, names: dict[str, str]):
    """A lazy package's __getattr__: a listed name comes from its own submodule; another may be a submodule."""
    package = module.__name__

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr in names:
            value = getattr(importlib.import_module(names[attr]), attr)
        else:
            try:
                value = importlib.import_module(f"{package}.{attr}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{attr}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {attr!r}") from None
        setattr(module, attr, value)
        return value

    return __getattr__


def runs_on_first_read(module, real_loader):
    """A deferred module's __getattr__: the first read of a name it lacks runs the module's file,
    except for a name in CALLED_LATER, which gets a stand-in that does so when called."""
    import threading

    lock = threading.RLock()

    def run_module() -> None:
        with lock:
            if module.__dict__.get("__getattr__") is __getattr__:
                del module.__getattr__
                real_loader.exec_module(module)

    def __getattr__(attr: str):
        if attr == "__path__":  # the import system asking whether a plain module is a package: it is not
            raise AttributeError(attr)
        if attr in CALLED_LATER.get(module.__name__, ()):
            return stand_in(module, attr, run_module)
        run_module()
        return getattr(module, attr)

    return __getattr__


def stand_in(module, name: str, run_module):
    def call(*args, **kwargs):
        run_module()
        return getattr(module, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def install() -> None:
    """Idempotent; does nothing for packages already imported."""
    if not any(isinstance(finder, LazyPackageFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, LazyPackageFinder())
