import zoo


def pytest_report_header() -> str:
    other = "fixed" if zoo.VERSION == "buggy" else "buggy"
    return f"bug zoo: the {zoo.VERSION} versions (BUG_ZOO={other} for the {other} ones)"
