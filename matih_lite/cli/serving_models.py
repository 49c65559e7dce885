"""``matih-lite models convert NAME VERSION --to onnx``: a registered model as ONNX, as a new version.

Joins the registry's ``models`` group. Conversion runs where the artifacts are: on this folder's
store (embedded, as the local admin), or in the service at ``MATIH_URL`` (as the token's user).
"""

from __future__ import annotations

import os
from typing import Annotated
from urllib.parse import quote

import typer

from matih_lite.cli.cards import models_app
from matih_lite.cli.output import ConfigOption, JsonOption, ProfileOption, console, escape, print_json


@models_app.command("convert")
def convert(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Version number to convert.", min=1)],
    to: Annotated[str, typer.Option("--to", help="Target format: onnx.")] = "onnx",
    rtol: Annotated[float, typer.Option("--rtol", help="Relative tolerance the ONNX outputs must meet.",
                                        min=0.0)] = 1e-5,
    config: ConfigOption = None, profile: ProfileOption = None, json_out: JsonOption = False,
) -> None:
    """Convert a scikit-learn or XGBoost version to ONNX, check its outputs, register it as the next version.

    The new version comes from the same run, with the same signature and training data, flavor onnx and
    the tag matih.converted_from=VERSION.

    Example: matih-lite models convert churn 3 --to onnx
    """
    import msgspec

    from matih_lite.host import Host
    from matih_lite.identity import LOCAL_ADMIN
    from matih_lite.serving.convert import convert_version

    if not json_out:
        console(stderr=True).print(f"converting {escape(name)} v{version} to {escape(to)}...")
    if os.environ.get("MATIH_URL"):
        from matih_lite.cli.streams import _service
        from matih_lite.serving.convert import Conversion

        with _service() as http:
            doc = http.call("POST", f"/api/v1/models/{quote(name, safe='')}/versions/{version}/convert",
                            json={"to": to, "rtol": rtol})
        result = msgspec.convert(doc, Conversion)
    else:
        host = Host.open(config, profile)
        try:
            result = convert_version(host, LOCAL_ADMIN, name, version, to=to, rtol=rtol)
        finally:
            host.close()
    if json_out:
        print_json(msgspec.to_builtins(result))
        return
    console().print(f"registered [bold]{escape(name)}[/bold] version [bold]{result.version}[/bold] (onnx) from "
                    f"version {result.from_version}: {result.checked_rows} rows checked, outputs "
                    f"{escape(', '.join(result.compared))} match (max difference {result.max_abs_diff:.2g}); "
                    f"{escape(result.converter)}")
