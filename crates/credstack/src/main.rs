fn main() -> std::process::ExitCode {
    credstack::cli::main()
}
