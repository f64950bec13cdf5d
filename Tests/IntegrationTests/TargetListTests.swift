import Foundation
import XCTest
@testable import netprobe

/// Thousands of targets on the command line: all probed, in order, and the parser's
/// quadratic handling of long positional lists is kept out of the way.
final class TargetListTests: XCTestCase {
    /// Every option of the command's --help that takes a value (`--count <count>`).
    func optionsTakingValues(_ command: String) throws -> Set<String> {
        let help = try Harness.run([Harness.netprobePath, command, "--help"]).standardOutput
        var names = Set<String>()
        for line in help.split(separator: "\n") {
            let text = line.trimmingCharacters(in: .whitespaces)
            guard text.hasPrefix("-"), let placeholder = text.range(of: " <") else { continue }
            for name in text[..<placeholder.lowerBound].split(separator: ",") { names.insert(name.trimmingCharacters(in: .whitespaces)) }
        }
        return names
    }

    func testTheListsOfOptionsTakingValuesMatchEachCommandsHelp() throws {
        XCTAssertEqual(try optionsTakingValues("ping"), PingCommand.optionsTakingValues)
        XCTAssertEqual(try optionsTakingValues("tcp"), TCPCommand.optionsTakingValues.subtracting(FragmentationOption.optionsTakingValues),
                       "tcp takes -M only to refuse it, so its help hides it")
        XCTAssertEqual(try optionsTakingValues("check"), CheckCommand.optionsTakingValues)
    }

    func testALongListIsSplitOffAfterTheFirstTargetWithOptionsAnywhere() {
        let targets = (1...100).map { "127.0.0.\($0)" }
        let arguments = ["-c", "1"] + targets.prefix(50) + ["-q", "--rate", "500"] + targets.dropFirst(50) + ["-i", "0.1"]
        let (kept, extra) = LongTargetLists.split(arguments, optionsTakingValues: PingCommand.optionsTakingValues)
        XCTAssertEqual(kept, ["-c", "1", "-q", "--rate", "500", "-i", "0.1", "--", "127.0.0.1"])
        XCTAssertEqual(extra, Array(targets.dropFirst()))
        let marked = LongTargetLists.split(["-c", "1"] + targets.prefix(50) + ["-Q", "ef", "-S", "127.0.0.1"] + targets.dropFirst(50),
                                           optionsTakingValues: PingCommand.optionsTakingValues)
        XCTAssertEqual(marked.kept, ["-c", "1", "-Q", "ef", "-S", "127.0.0.1", "--", "127.0.0.1"], "-Q's and -S's values are not targets")
        XCTAssertEqual(marked.extra, Array(targets.dropFirst()))
        let short = LongTargetLists.split(["-c", "1", "127.0.0.1", "::1"], optionsTakingValues: PingCommand.optionsTakingValues)
        XCTAssertEqual(short.kept, ["-c", "1", "127.0.0.1", "::1"], "a short list goes to the parser untouched")
        XCTAssertEqual(short.extra, [])
    }

    func testTwoThousandTargetsAsArgumentsAreEachProbedOnceInOrder() throws {
        try Harness.requireRoot()
        let targets = (0..<2000).map { "127.0.\($0 / 250).\($0 % 250 + 1)" }
        let result = try Harness.run([Harness.netprobePath, "ping", "-c", "1"] + targets + ["--rate", "5000", "--json"], timeout: 60)
        XCTAssertEqual(result.status, 0, result.standardError)
        let rounds = try result.jsonLines()
        XCTAssertEqual(Set(rounds.compactMap { $0["target"] as? String }), Set(targets))
        XCTAssertEqual(rounds.count, 2000)
        XCTAssertTrue(rounds.allSatisfy { $0["received"] as? Int == 1 })
        let bad = try Harness.run([Harness.netprobePath, "tcp", "-c", "1", "127.0.0.1:80"] + targets.prefix(100))
        XCTAssertEqual(bad.status, 3, "targets past the first are validated too: \(bad.standardError)")
        XCTAssertTrue(bad.standardError.contains("a port is needed"), bad.standardError)
    }
}
