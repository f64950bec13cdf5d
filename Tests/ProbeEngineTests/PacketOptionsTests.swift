import ProbeResults
import XCTest

final class PacketOptionsTests: XCTestCase {
    func testDefaultOptionsSendClassZeroFromTheRoutesSourceAndInterface() {
        let options = PacketOptions()
        XCTAssertEqual(options.tos, 0, "the default class stays 0 (a default mark makes lossy paths look clean)")
        XCTAssertNil(options.source)
        XCTAssertNil(options.interface)
        XCTAssertTrue(options.isDefault)
        XCTAssertEqual(ProbeTarget(name: "a", address: nil).options, .none)
    }

    func testOptionsArePartOfTheTargetsIdentity() {
        let plain = ProbeTarget(name: "a", address: IPAddress(parsing: "127.0.0.1"))
        var marked = plain
        marked.options.tos = 0xb8
        XCTAssertNotEqual(plain, marked)
    }

    func testDecimalAndHexBytesAreTheWholeTOSByte() throws {
        XCTAssertEqual(try TrafficClass.parse("184"), 0xb8)
        XCTAssertEqual(try TrafficClass.parse("0xb8"), 0xb8)
        XCTAssertEqual(try TrafficClass.parse("0XB8"), 0xb8)
        XCTAssertEqual(try TrafficClass.parse("0"), 0)
        XCTAssertEqual(try TrafficClass.parse("0xfc"), 0xfc)
    }

    func testDSCPNamesMeanTheCodePointShiftedByTwo() throws {
        XCTAssertEqual(try TrafficClass.parse("ef"), 46 << 2)
        XCTAssertEqual(try TrafficClass.parse("EF"), 0xb8)
        XCTAssertEqual(try TrafficClass.parse("af11"), 10 << 2)
        XCTAssertEqual(try TrafficClass.parse("af41"), 34 << 2)
        XCTAssertEqual(try TrafficClass.parse("af43"), 38 << 2)
        XCTAssertEqual(try TrafficClass.parse("cs0"), 0)
        XCTAssertEqual(try TrafficClass.parse("cs6"), 48 << 2)
        XCTAssertEqual(try TrafficClass.parse("Cs7"), 56 << 2)
        XCTAssertEqual(TrafficClass.dscpNames.count, 1 + 12 + 8)
    }

    func testECNBitsAreRefusedNamingTheNearestValidValue() {
        XCTAssertThrowsError(try TrafficClass.parse("0xb9")) { error in
            XCTAssertEqual("\(error)", "0xb9 sets ECN bits; did you mean 0xb8 (ef)?")
        }
        XCTAssertThrowsError(try TrafficClass.parse("3")) { error in
            XCTAssertEqual("\(error)", "0x03 sets ECN bits; did you mean 0x00 (cs0)?")
        }
        XCTAssertThrowsError(try TrafficClass.parse("0x05")) { error in
            XCTAssertEqual("\(error)", "0x05 sets ECN bits; did you mean 0x04?")
        }
    }

    func testNamesAndBytesOutsideTheRangeAreRefused() {
        for text in ["256", "-1", "0x100", "af44", "cs8", "ef1", "", "0x", "high"] {
            XCTAssertThrowsError(try TrafficClass.parse(text), text) { error in
                XCTAssertTrue("\(error)".contains("is not a TOS value"), "\(error)")
            }
        }
    }

    func testDescriptionNamesTheCodePoint() {
        XCTAssertEqual(TrafficClass.describe(0xb8), "0xb8 (ef)")
        XCTAssertEqual(TrafficClass.describe(0x88), "0x88 (af41)")
        XCTAssertEqual(TrafficClass.describe(0x04), "0x04")
    }
}
