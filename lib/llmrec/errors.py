"""One line for a failure: what a job prints and what a stage run records."""
from __future__ import annotations

import re


def java_causes(err: BaseException) -> list[str]:
    """The first lines of the Java exceptions behind a Spark error, outermost first: the
    innermost ("java.io.IOException: No space left on device") is what the Python-side
    message often buries. Empty for errors that did not come from the JVM."""
    origin = getattr(err, "_origin", None) or getattr(err, "java_exception", None)
    chain = []
    try:
        while origin is not None and len(chain) < 20:
            chain.append(str(origin.toString()).strip().splitlines()[0])
            origin = origin.getCause()
    except Exception:  # the gateway may be gone (the JVM died): keep what we have
        pass
    return chain


def describe(err: BaseException) -> str:
    """One line for a failure: the error's first line (for a bare Py4J error, which says
    only which Java call failed, the root cause instead), the root cause if different,
    and the file Spark was reading or writing if it named one."""
    text = str(err).strip()
    line = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
    if type(err).__name__ == "PythonException":  # a UDF failed: its traceback's last line
        raised = [x.strip() for x in text.splitlines() if re.match(r"\s*[\w.]+(Error|Exception)\b.*:", x)]
        if raised:
            return f"PythonException in a Spark task: {raised[-1]}"
    chain = java_causes(err)
    if chain:
        root = chain[-1]
        line = root if type(err).__name__ == "Py4JJavaError" else \
            line if root in line else f"{line} (cause: {root})"
        files = [m.group(1) for c in chain for m in [re.search(r"(?:reading|to) file (\S+?)\.?(?:\s|$)", c)] if m]
        if files and files[0] not in line:
            line += f" [file {files[0]}]"
    return line
