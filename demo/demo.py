"""The joblib-rs demo: what the package does today, timed against joblib when installed."""

import joblib_rs


def main() -> None:
    print(f"joblib-rs {joblib_rs.__version__}")


if __name__ == "__main__":
    main()
