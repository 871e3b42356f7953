"""The ``grammar-rae`` command line: a thin layer over the Python API.

One error boundary (:class:`Boundary`) turns what a user got wrong -- any ``UserError`` and
operating-system errors such as a missing file -- into one line on stderr and exit status 1; every
other exception is a bug and keeps its traceback. Options that several commands share are defined
once in ``options.py``; each command body calls the API and reports.
"""
from __future__ import annotations

import click

from .. import __version__


class Boundary(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:
            from ..errors import UserError

            if isinstance(e, (UserError, OSError)):
                text = str(e)
                if isinstance(e, OSError) and e.filename and e.strerror:  # "[Errno 2] …: 'x'" reads badly
                    text = f"{e.filename}: {e.strerror.lower()}"
                message = " ".join(line.strip() for line in text.splitlines() if line.strip())
                raise click.ClickException(message or type(e).__name__) from None
            raise


@click.group(cls=Boundary, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="grammar-rae")
def main():
    """Regularized Autoencoders on grammar-decoded molecules and expressions, and on images.

    Start with `grammar-rae demo` (offline: the shipped pretrained models), or
    `grammar-rae COMMAND --help` for any command. Wherever a command takes --run, a shipped
    pretrained model works too: zinc-grae (molecules), expr-grae (expressions).
    """


from . import data_cmds, demo_cmd, image_cmds, model_cmds, optimize_cmd  # noqa: E402,F401  (they add commands)
