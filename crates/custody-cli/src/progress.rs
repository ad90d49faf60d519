//! Progress bars for long work at the command line.

/// A progress bar on standard error in `template`'s style, drawn only when that is a terminal
/// (a log or a pipe gets the command's own summary line instead).
pub(crate) fn bar(template: &str) -> indicatif::ProgressBar {
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
