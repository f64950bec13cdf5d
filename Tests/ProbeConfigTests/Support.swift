import Foundation
import XCTest
@testable import ProbeConfig

/// The fixtures directory copied into the test bundle.
let fixturesDirectory = Bundle.module.path(forResource: "Fixtures", ofType: nil)!

func fixture(_ name: String) -> String {
    fixturesDirectory + "/" + name
}

/// The repository root, for the files the project ships (targets/, deploy/).
let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// An expected error: line, column, message (the file is checked separately).
struct Expected: Equatable, CustomStringConvertible {
    var line: Int
    var column: Int
    var message: String

    init(_ line: Int, _ column: Int, _ message: String) {
        self.line = line
        self.column = column
        self.message = message
    }

    var description: String { "\(line):\(column): \(message)" }
}

func configErrors(
    _ path: String, environment: [String: String] = [:],
    file: StaticString = #filePath, line: UInt = #line
) -> [ConfigurationError] {
    do throws(ConfigurationErrors) {
        _ = try ConfigurationLoader.load(path: path, environment: environment)
        XCTFail("\(path) loaded without errors", file: file, line: line)
        return []
    } catch {
        return error.errors
    }
}

func pingErrors(_ path: String, file: StaticString = #filePath, line: UInt = #line) -> [ConfigurationError] {
    do throws(ConfigurationErrors) {
        _ = try ConfigurationLoader.loadPingTargets(path: path)
        XCTFail("\(path) loaded without errors", file: file, line: line)
        return []
    } catch {
        return error.errors
    }
}

func tcpErrors(_ path: String, file: StaticString = #filePath, line: UInt = #line) -> [ConfigurationError] {
    do throws(ConfigurationErrors) {
        _ = try ConfigurationLoader.loadTCPTargets(path: path)
        XCTFail("\(path) loaded without errors", file: file, line: line)
        return []
    } catch {
        return error.errors
    }
}

/// Asserts the exact errors, all in `path`, in order.
func assertErrors(
    _ errors: [ConfigurationError], in path: String, _ expected: [Expected],
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertEqual(errors.map { Expected($0.line, $0.column, $0.message) }, expected, file: file, line: line)
    for error in errors {
        XCTAssertEqual(error.file, path, file: file, line: line)
    }
}

/// A fresh directory under /tmp, removed when the test ends.
func temporaryDirectory(_ testCase: XCTestCase) throws -> String {
    let path = URL(fileURLWithPath: NSTemporaryDirectory())
        .appendingPathComponent("probeconfig-\(UUID().uuidString)").standardizedFileURL.path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    testCase.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    return path
}

/// Writes `contents` to `path` with `mode` set explicitly (the umask must not decide it).
func write(_ contents: String, to path: String, mode: Int) throws {
    try FileManager.default.createDirectory(
        atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try contents.write(toFile: path, atomically: false, encoding: .utf8)
    try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
}
