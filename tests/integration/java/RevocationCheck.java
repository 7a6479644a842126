// Java's PKIX validator as a relying party: validates leaf -> issuing CA -> root with revocation
// checking by OCSP (the AIA URL) or by CRL (the CRL distribution point), no fallback.
// Usage: java RevocationCheck.java ocsp|crl root.pem chain.pem   (chain: leaf first)
// Prints VALID, or REVOKED <message>, or FAILED <reason> <message>. Both the leaf and the issuing
// CA are checked (the issuing CA by its root's OCSP responder or CRL).
import java.io.FileInputStream;
import java.security.cert.*;
import java.util.*;

public class RevocationCheck {
    public static void main(String[] args) throws Exception {
        CertificateFactory factory = CertificateFactory.getInstance("X.509");
        X509Certificate root;
        try (FileInputStream in = new FileInputStream(args[1])) {
            root = (X509Certificate) factory.generateCertificate(in);
        }
        List<Certificate> chain;
        try (FileInputStream in = new FileInputStream(args[2])) {
            chain = new ArrayList<>(factory.generateCertificates(in));
        }
        CertPath path = factory.generateCertPath(chain);
        CertPathValidator validator = CertPathValidator.getInstance("PKIX");
        PKIXRevocationChecker checker = (PKIXRevocationChecker) validator.getRevocationChecker();
        Set<PKIXRevocationChecker.Option> options = EnumSet.of(PKIXRevocationChecker.Option.NO_FALLBACK);
        if (args[0].equals("crl")) {
            options.add(PKIXRevocationChecker.Option.PREFER_CRLS);
            System.setProperty("com.sun.security.enableCRLDP", "true");
        }
        checker.setOptions(options);
        PKIXParameters parameters = new PKIXParameters(Set.of(new TrustAnchor(root, null)));
        parameters.addCertPathChecker(checker);
        parameters.setRevocationEnabled(false);  // the checker above does it, as configured
        try {
            validator.validate(path, parameters);
            System.out.println("VALID");
        } catch (CertPathValidatorException e) {
            if (e.getReason() == CertPathValidatorException.BasicReason.REVOKED) {
                System.out.println("REVOKED " + e.getMessage());
            } else {
                System.out.println("FAILED " + e.getReason() + " " + e.getMessage());
            }
        }
    }
}
